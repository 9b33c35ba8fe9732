"""`python -m proxywasm_host`: the `proxywasm` command."""
import sys

from .cli import main

sys.exit(main())
