"""The library never configures logging (pgmpy does at import; cpn undoes it)."""

import subprocess
import sys


def test_importing_the_packages_leaves_root_logging_alone():
    code = ("import logging; import cpn, gbdt, ehr, evaluation, imaging; r = logging.getLogger(); "
            "print(r.level, len(r.handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["30", "0"]
