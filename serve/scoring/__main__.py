"""`python -m serve.scoring MODEL --input ... --output ...`: the score command on its own."""

import typer

from serve.commands.scoring import score_command

if __name__ == "__main__":
    typer.run(score_command)
