"""Reading a subjects file (`erasure request submit --subjects-file`), one id per line.

The format, written down once (docs/cli.md repeats it):

* UTF-8, with or without a leading byte order mark (EF BB BF, dropped). A file that starts
  with a UTF-16 or UTF-32 byte order mark, or a line with NUL bytes (UTF-16 without a mark),
  or bytes that are not UTF-8 is refused, naming the line.
* Lines end at \\n; a \\r just before it (\\r\\n) is dropped too. Nothing else ends a line:
  the other characters `str.splitlines` treats as breaks (\\v \\f \\x1c-\\x1e \\x85 U+2028
  U+2029) are refused inside a line, like every character `subject.check_subject_id` refuses.
* Spaces (U+0020 only) around an id are dropped; a line with nothing else is skipped. Any
  other white space around an id is refused.
* A line longer than MAX_LINE_BYTES bytes is refused without being held in memory whole.

The file is read as a stream, line by line, so a file of millions of ids needs no more
memory than one line. Errors name the file and line, never the id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .subject import MAX_SUBJECT_ID_CHARS, check_subject_id

MAX_LINE_BYTES = 64 * 1024
_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
         (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))
UTF8_BOM = b"\xef\xbb\xbf"


class SubjectsFile:
    """A subjects file that can be read more than once (validate every line, then record),
    refusing to go on if it changed in between."""

    def __init__(self, path: Path):
        self.path = path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"subjects file {path}: {exc.strerror or exc}") from None
        if not os.path.isfile(path):
            raise InputError(f"subjects file not found: {path}")
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _err(self, line: int, what: str) -> InputError:
        return InputError(f"subjects file {self.path} line {line}: {what}; nothing was recorded")

    def ids(self) -> Iterator[tuple[int, str]]:
        """(line number, subject id) for each id, every rule checked. Raises InputError
        on the first line that breaks one."""
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"subjects file {self.path}: {exc.strerror or exc}") from None
        with f:
            st = os.fstat(f.fileno())
            if (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp:
                raise InputError(f"subjects file {self.path} changed while it was being read; "
                                 "submit it again when nothing writes to it")
            number = 0
            while True:
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return
                number += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise self._err(number, f"the line is longer than {MAX_LINE_BYTES} bytes "
                                    f"(a subject id has at most {MAX_SUBJECT_ID_CHARS} "
                                    "characters)")
                if number == 1:
                    for bom, name in _BOMS:
                        if raw.startswith(bom):
                            raise InputError(
                                f"subjects file {self.path} is {name} (it starts with a {name} "
                                "byte order mark); save it as UTF-8 and submit it again. "
                                "Nothing was recorded")
                    if raw.startswith(UTF8_BOM):
                        raw = raw[len(UTF8_BOM):]
                if raw.endswith(b"\r\n"):
                    raw = raw[:-2]
                elif raw.endswith(b"\n"):
                    raw = raw[:-1]
                if b"\x00" in raw:
                    raise self._err(number, "the line holds NUL bytes: is the file UTF-16 or "
                                    "UTF-32? Save it as UTF-8")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise self._err(number, f"not valid UTF-8 (byte {exc.start + 1} of the "
                                    "line); save the file as UTF-8") from None
                text = text.strip(" ")
                if not text:
                    continue
                yield number, check_subject_id(text, f"subjects file {self.path} line {number}:"
                                               " the subject id")
