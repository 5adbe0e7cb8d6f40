"""`python -m pixprompt.cli`."""
import sys

from pixprompt.cli.app import main

sys.exit(main())
