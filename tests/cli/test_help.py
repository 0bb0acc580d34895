"""`taskfuse --help`: the command list a user reads first."""
import inspect

from typer.testing import CliRunner

from taskfuse.cli.main import app


def test_each_commands_summary_reads_as_one_paragraph_in_the_command_list():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for command in app.registered_commands:
        summary = " ".join(inspect.cleandoc(command.callback.__doc__).split("\n\n")[0].split())
        name = command.name or command.callback.__name__.replace("_", "-")
        assert any(name in line and summary in line for line in lines), (name, summary)
