"""The console script's launcher and the lazily loaded package namespace."""
import subprocess
import sys

import pytest

import taskfuse


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_loads_nothing_heavy():
    # the launcher relies on this: it must switch the collector off before torch and pydantic load
    assert run_python("import sys, taskfuse.cli.launch; print('torch' in sys.modules, 'pydantic' in sys.modules)") \
        == "False False"


def test_public_names_load_on_first_use():
    from taskfuse.api import merge
    from taskfuse.errors import SpecError

    assert taskfuse.merge is merge and taskfuse.SpecError is SpecError
    assert set(taskfuse.__all__) <= set(dir(taskfuse))
    with pytest.raises(AttributeError, match="no attribute 'merj'"):
        taskfuse.merj  # noqa: B018


def test_launcher_runs_the_command_with_the_collector_back_on_and_imports_frozen():
    out = run_python(
        "import gc, sys\n"
        "from taskfuse.cli import launch\n"
        "sys.argv = ['taskfuse', 'methods', 'slerp']\n"
        "try:\n    launch.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 10000)")
    assert out.splitlines()[-1] == "True True"
    assert "slerp" in out


def test_plan_is_the_api_function_even_after_the_planning_subpackage_loads():
    # taskfuse.plan names both the API function and the planning subpackage; the function must win in any order
    assert run_python("import taskfuse.plan.planner, taskfuse.cli.main\nfrom taskfuse import plan\n"
                      "import taskfuse.api\nprint(plan is taskfuse.api.plan, taskfuse.plan is plan)") == "True True"
