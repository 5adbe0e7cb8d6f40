"""`python -m pixprompt …`, which is how torchrun starts it: `torchrun --nproc-per-node 4 -m pixprompt eval …`."""
import sys

from pixprompt.cli import main

sys.exit(main())
