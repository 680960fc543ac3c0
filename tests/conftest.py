"""Test-wide settings.

CI runs hypothesis derandomized (the same examples every run), so that a red CI always
points at a change; local runs keep exploring new examples.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
