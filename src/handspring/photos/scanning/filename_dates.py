"""A photo's date and time from its file name, for files without EXIF dates.

Camera, phone and screenshot names seen in the wild:

    IMG_20230704_153012.jpg        PXL_20230704_153012345.jpg    20230704_153012.heic
    2023-07-04 15.30.12.png        Screenshot 2023-07-04 at 15.30.12.png
    IMG-20230704-WA0001.jpg (a date without a time: midnight)
"""

from __future__ import annotations

import datetime
import os
import re

_DATE = (
    r"(?<!\d)(?P<y>(?:19|20)\d\d)(?P<sep>[-_.]?)(?P<m>0[1-9]|1[0-2])(?P=sep)"
    r"(?P<d>0[1-9]|[12]\d|3[01])"
)
# The time may run straight into milliseconds (PXL_..._153012345), so no digit guard after it.
_TIME = (
    r"(?:[ _T-]|\s+at\s+)(?P<H>[01]\d|2[0-3])(?P<tsep>[-_.:]?)(?P<M>[0-5]\d)(?P=tsep)(?P<S>[0-5]\d)"
)
_DATE_TIME = re.compile(rf"{_DATE}(?:{_TIME}|(?!\d))")


def date_from_file_name(path: str) -> datetime.datetime | None:
    """The first valid date (and time, if one follows it) in the file's name, naive."""
    stem = os.path.splitext(os.path.basename(path))[0]
    for match in _DATE_TIME.finditer(stem):
        parts = match.groupdict()
        try:
            return datetime.datetime(
                int(parts["y"]),
                int(parts["m"]),
                int(parts["d"]),
                int(parts["H"] or 0),
                int(parts["M"] or 0),
                int(parts["S"] or 0),
            )
        except ValueError:  # 2023-02-30: not a date, look further along the name
            continue
    return None
