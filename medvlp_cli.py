"""Entry point of the `medvlp` command (setup.py `console_scripts`).

`import medvlp_hf` registers every model with transformers' Auto classes, which imports torch and transformers
(seconds), and Python imports a package before any module inside it. So that `medvlp --help` answers at once, this
module runs `medvlp_hf/cli.py` by its file path, without importing the package; each command imports what it
needs when it runs.
"""
import importlib.util
import sys
from pathlib import Path


def main(argv=None):
    package = importlib.util.find_spec("medvlp_hf")
    if package is None:
        sys.exit("medvlp: the medvlp_hf package is not importable; install medvlp-hf (pip install medvlp-hf).")
    spec = importlib.util.spec_from_file_location("medvlp_hf_cli", Path(package.origin).with_name("cli.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
