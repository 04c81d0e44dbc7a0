"""Converts a legacy `.pkl` policy or student file to `.safetensors`, once.

    python scripts/convert_policy.py logs/FrankaReach-<ts>/policy.pkl   # -> policy.safetensors
    python scripts/convert_policy.py OLD.pkl NEW.safetensors

The pickle is read through an allow-list of the classes our files hold (numpy arrays, brax's
normaliser state); any other class, which is what a crafted file needs to run code, is refused.
See playground/files/legacy_pickle.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from playground.files import legacy_pickle  # noqa: E402

if __name__ == "__main__":
    legacy_pickle.main(sys.argv[1:])
