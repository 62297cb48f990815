"""`make gpu-check`: tadsweep.site.gpu_check from this checkout, also where tadsweep is not
installed (the OpenTAD image)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tadsweep import cli
    from tadsweep.site import gpu_check

    cli.run(gpu_check.main)
