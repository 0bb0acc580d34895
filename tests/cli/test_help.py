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


def test_a_methods_parameters_say_what_they_accept():
    result = CliRunner().invoke(app, ["methods", "ties"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    for accepted in ("number in (0, 1] or list of number in (0, 1]", "'mass' | 'count'", "'tensor' | 'model'",
                     "list of number or none"):
        assert accepted in result.output
    assert "SignElection" not in result.output  # the name of a type alias says nothing to a user
    assert "integer in [1, 255]" in CliRunner().invoke(app, ["methods", "partitioned_task_arithmetic"],
                                                      env={"COLUMNS": "1000"}).output
