"""The README.md model card written beside a merged model."""
from __future__ import annotations

from collections import Counter

import yaml

from .. import __version__
from ..plan.plan import Plan


def model_card(plan: Plan) -> str:
    spec = plan.spec
    methods = Counter(j.method for j in plan.jobs)
    front = {"library_name": "transformers", "tags": ["merge", "taskfuse", spec.get("method", "")],
             "base_model": list(plan.checkpoints)}
    rows = "\n".join(f"| {m} | {n} |" for m, n in methods.most_common())
    resolved = {m: next(j.params for j in plan.jobs if j.method == m) for m in methods}
    models = "\n".join(f"- `{ref}`" + (" (base)" if plan.has_base and i == 0 else "")
                       for i, ref in enumerate(plan.checkpoints))
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---
# Merged model

Made with taskfuse {__version__} using **{spec.get('method')}** (seed {plan.seed}, output dtype {plan.dtype}).

## Sources
{models}

## Parameters (resolved, first tensor of each method)
```yaml
{yaml.safe_dump(resolved, sort_keys=False).strip()}
```

## Tensors per method
| method | tensors |
|---|---|
{rows}

Reproduce with `taskfuse merge taskfuse_spec.yaml -o OUT` (the resolved spec is saved beside this card).
"""
