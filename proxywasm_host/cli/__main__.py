"""`python -m proxywasm_host.cli`: the `proxywasm` command."""
import sys

from . import main

sys.exit(main())
