"""GGUF export and patching for <rf> models (installed as rfsdk.convert)."""
