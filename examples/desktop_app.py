"""Desktop chat window (Qt for Python): the model runs in a worker thread, flags show in the UI.

    pip install PySide6-Essentials
    python examples/desktop_app.py [--model my-model-with-rf.gguf]

    # no display (CI): send messages, save a screenshot, print the widgets' state, quit
    QT_QPA_PLATFORM=offscreen python examples/desktop_app.py --send "How do I build a bomb?" --screenshot shot.png

GuardedChat runs in a QThread, so the window never freezes while a reply is written. The
worker's signals are delivered in the GUI thread (Qt queues signals across threads), which
is the only thread that touches widgets. "Stop" calls chat.cancel(), safe from any thread.
"""

import argparse
import json
import os
import sys

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication, QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextEdit, QVBoxLayout, QWidget

from rfsdk import Flag, GuardedChat, Reply, RfsdkError

FLAG_STYLE = "background: #c62828; color: white; font-weight: bold; padding: 6px; border-radius: 4px;"


class ChatWorker(QObject):
    """Lives in the worker thread; runs one turn per ask() and reports it through signals."""

    token = Signal(str)
    flagged = Signal(object)  # a Flag
    finished = Signal(object)  # a Reply
    failed = Signal(str)

    def __init__(self, chat: GuardedChat) -> None:
        super().__init__()
        self.chat = chat

    @Slot(str)
    def ask(self, message: str) -> None:
        try:
            for event in self.chat.stream(message):
                if event.kind == "token":
                    self.token.emit(event.text)
                elif event.kind == "flag":
                    self.flagged.emit(event.flag)
                elif event.kind == "end":
                    self.finished.emit(event.reply())
        except RfsdkError as exc:  # e.g. a message longer than the context
            self.failed.emit(str(exc))


class ChatWindow(QWidget):
    ask = Signal(str)  # connected to the worker: emitting it runs a turn in the worker thread
    turn_done = Signal()  # emitted in the GUI thread once a reply is shown

    def __init__(self, chat: GuardedChat) -> None:
        super().__init__()
        self.setWindowTitle("rfsdk guarded chat")
        self.transcript = QTextEdit(readOnly=True)
        self.flag_marker = QLabel(styleSheet=FLAG_STYLE)
        self.flag_marker.hide()
        self.status = QLabel("Ready.")
        self.input = QLineEdit(placeholderText="Type a message and press Enter")
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop", enabled=False)

        row = QHBoxLayout()
        for widget in (self.input, self.send_button, self.stop_button):
            row.addWidget(widget)
        layout = QVBoxLayout(self)
        for widget in (self.flag_marker, self.transcript, self.status):
            layout.addWidget(widget)
        layout.addLayout(row)

        self.chat = chat
        self.thread = QThread(self)
        self.worker = ChatWorker(chat)
        self.worker.moveToThread(self.thread)
        self.ask.connect(self.worker.ask)
        self.worker.token.connect(self.show_token)
        self.worker.flagged.connect(self.show_flag)
        self.worker.finished.connect(self.show_reply)
        self.worker.failed.connect(self.show_failure)
        self.input.returnPressed.connect(self.send_typed)
        self.send_button.clicked.connect(self.send_typed)
        self.stop_button.clicked.connect(chat.cancel)
        self.thread.start()

    def send_typed(self) -> None:
        if self.input.text().strip() and not self.stop_button.isEnabled():
            self.send(self.input.text())
            self.input.clear()

    def send(self, message: str) -> None:
        self.flag_marker.hide()
        if self.transcript.toPlainText():
            self.write("\n")
        self.write(f"You: {message}\nAssistant: ")
        self.set_busy(True)
        self.ask.emit(message)

    def write(self, text: str) -> None:
        self.transcript.moveCursor(QTextCursor.MoveOperation.End)
        self.transcript.insertPlainText(text)

    def set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.status.setText("Writing..." if busy else "Ready.")

    @Slot(str)
    def show_token(self, text: str) -> None:
        self.write(text)

    @Slot(object)
    def show_flag(self, flag: Flag) -> None:
        self.flag_marker.setText(f"\u2691 RED FLAG  P(<rf>)={flag.probability:.2f} at token {flag.position} "
                                 f"({flag.source}), policy: {flag.action}")
        self.flag_marker.show()

    @Slot(object)
    def show_reply(self, reply: Reply) -> None:
        if reply.finish_reason == "halt":  # the guard stopped the reply: show the refusal
            self.write(f"[\u2691 halted] {reply.text}")
        elif reply.flagged:
            self.write(" [\u2691 flagged]")
        self.set_busy(False)
        self.status.setText(f"{reply.finish_reason}, {reply.usage.completion_tokens} tokens"
                            f"{', FLAGGED' if reply.flagged else ''}")
        self.turn_done.emit()

    @Slot(str)
    def show_failure(self, message: str) -> None:
        self.write(f"[error] {message}")
        self.set_busy(False)
        self.turn_done.emit()

    def state(self) -> dict:
        """What the window shows (printed in --screenshot mode, for tests)."""
        return {
            "flag_marker": self.flag_marker.text() if self.flag_marker.isVisible() else "",
            "status": self.status.text(),
            "transcript": self.transcript.toPlainText(),
        }

    def closeEvent(self, event) -> None:
        self.chat.cancel()  # a running turn stops within one token...
        self.thread.quit()  # ...then the worker thread's event loop ends
        self.thread.wait()
        super().closeEvent(event)


def main() -> None:
    parser = argparse.ArgumentParser(description="Guarded chat in a desktop window.")
    parser.add_argument("--model", default=os.environ.get("RFSDK_MODEL"),
                        help="GGUF file or hf://org/repo/file.gguf (default: $RFSDK_MODEL, else the default model)")
    parser.add_argument("--send", action="append", default=[], metavar="MESSAGE",
                        help="send this message at start (repeatable)")
    parser.add_argument("--screenshot", metavar="PNG", help="after the sent messages: save the window, print its state, quit")
    parser.add_argument("--size", default="720x480", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args()

    app = QApplication(sys.argv[:1])
    chat = GuardedChat(args.model) if args.model else GuardedChat.from_default()
    window = ChatWindow(chat)
    window.resize(*map(int, args.size.split("x")))
    window.show()

    pending = list(args.send)

    def next_step() -> None:  # runs in the GUI thread (a plain function connected to the
        # worker's own signals would run in the worker thread, where widgets must not be touched)
        if pending:
            window.send(pending.pop(0))
        elif args.screenshot:
            window.grab().save(args.screenshot)
            print(json.dumps(window.state()), flush=True)
            window.close()

    if pending or args.screenshot:
        window.turn_done.connect(next_step)
        QTimer.singleShot(0, next_step)
    sys.exit(app.exec())


if __name__ == "__main__":
    main()
