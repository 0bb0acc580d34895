"""The spec parser on random documents: every input is either a valid spec or a typed SpecError, never a crash."""
import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskfuse.errors import SpecError
from taskfuse.spec import MergeSpec, load_spec, parse_spec
from taskfuse.spec.mergekit import METHODS, TOP_KEYS

# Keys and names the parsers know, mixed with arbitrary ones, so random documents reach deep into both parsers.
KEYS = sorted({*MergeSpec.model_fields, *TOP_KEYS, "path", "weight", "params", "tensors", "method", "model",
               "layers", "layer_range", "sources", "filter", "value", "density", "scale", "t", "missing", "extra",
               "integer", "normalize", "rescale", "lambda", "gamma", "epsilon", "int8_mask"})
NAMES = sorted({*METHODS, "ties", "linear", "nope", "base", ""})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 100), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(NAMES), st.text(max_size=8))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=6)), max_leaves=30)
spec_like = st.fixed_dictionaries({}, optional={k: documents for k in KEYS})

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(documents, spec_like))
def test_random_documents_are_specs_or_spec_errors(data):
    try:
        assert isinstance(parse_spec(data), MergeSpec)
    except SpecError:
        pass


@FUZZ
@given(st.one_of(spec_like.map(lambda d: {**d, "merge_method": d.get("merge_method", "ties")}),
                 st.fixed_dictionaries({"merge_method": st.sampled_from(sorted(METHODS))},
                                       optional={k: documents for k in TOP_KEYS - {"merge_method"}})))
def test_random_mergekit_configs_are_specs_or_spec_errors(data):
    try:
        assert isinstance(parse_spec(data), MergeSpec)
    except SpecError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 documents.map(lambda d: yaml.safe_dump(d).encode()),
                 documents.map(lambda d: json.dumps(d, allow_nan=True).encode())))
def test_random_spec_files_are_specs_or_spec_errors(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(raw)
    try:
        assert isinstance(load_spec(path), MergeSpec)
    except SpecError:
        pass
