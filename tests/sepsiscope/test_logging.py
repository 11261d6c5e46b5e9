"""The library never configures logging (pgmpy does at import; cpn._pgmpy undoes it)."""

import subprocess
import sys


def test_importing_the_packages_leaves_root_logging_alone():
    # cpn.load_network imports pgmpy (on first use)
    code = ("import logging; import cpn, gbdt, ehr, evaluation, imaging; cpn.load_network('physionet'); "
            "r = logging.getLogger(); print(r.level, len(r.handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["30", "0"]
