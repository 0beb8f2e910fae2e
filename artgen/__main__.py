"""python -m artgen"""

from .cli import main

main()
