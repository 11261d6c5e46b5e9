"""FHIR validation by shape: ``fhir.resources``' verdict on every resource, at a fraction of its cost
for resources shaped like one it has accepted before.

Validating an Observation with ``fhir.resources`` (pydantic models, one per element) costs about
70 us; a 24-hour bundle carries over a hundred of them, which caps a scoring service near 60
never-seen bundles a second. Yet those resources differ only in their values: the same keys, the
same nesting, the same JSON types. ``fhir.resources`` checks two things, and only two: the
*structure* (allowed elements, cardinality, required elements, one ``value[x]``, no nulls), which
depends on the shape alone, and each *primitive* (``id``, ``code``, ``uri``, ``dateTime``,
``decimal`` ...) against its own type, which depends on that value alone. It enforces neither
value-set bindings nor reference target types nor invariants across elements.

So :class:`ShapeValidator` keys a resource by its *shape* -- the tree of keys with the JSON type of
each leaf (and the literal ``resourceType``) -- and the first resource of a shape goes through
:func:`ehr.sources.fhir.validate_resource` in full. When it passes, the validator looks up, in
the ``fhir.resources`` model classes, the pydantic type of each leaf of that shape, and a later
resource of the same shape is accepted when each leaf value passes its own type (values already
seen to pass are remembered). Anything else -- a new shape, a leaf that fails, a shape whose leaf
types cannot be resolved (primitive extensions ``_x``, contained resources) -- goes to the full
validation, which accepts it or raises the same :class:`~ehr.sources.readings.ReadingError` it
always raises. ``tests/ehr/test_fhir_shapes.py`` checks the verdicts against the full validation
on mutated resources.

Examples
--------
>>> obs = {"resourceType": "Observation", "id": "a1", "status": "final",
...        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
...        "effectiveDateTime": "2026-01-01T08:10:00Z", "valueQuantity": {"value": 88, "code": "/min"}}
>>> check = ShapeValidator()
>>> check(obs)                                      # the first of its shape: validated in full
>>> check(dict(obs, id="a2", effectiveDateTime="2026-01-01T09:10:00Z"))   # leaves only
>>> check.fast, check.full
(1, 1)
>>> try:
...     check(dict(obs, id="a3", effectiveDateTime="2026-13-01T09:10:00Z"))
... except ValueError as exc:
...     print(exc.loc[-1], exc.kind)
effectiveDateTime fhir
"""

from __future__ import annotations

import types
import typing

from .fhir import _model, validate_resource

__all__ = ["ShapeValidator"]

_LEAF_TYPES = (str, int, float, bool, type(None))
_NO_PLAN = object()


class _Odd(Exception):
    """The shape cannot be keyed (a value that is not JSON, a key that is not a string)."""


def shape_of(node, leaves: list):
    """The shape of a decoded JSON value; its leaf values are appended to ``leaves`` in walk order.

    >>> leaves = []
    >>> shape_of({"resourceType": "Patient", "id": "p", "active": True}, leaves), leaves
    (('resourceType', 'Patient', 'id', <class 'str'>, 'active', <class 'bool'>), ['p', True])
    """
    t = type(node)
    if t is dict:
        return _dict_shape(node, leaves)
    if t is list:
        return _list_shape(node, leaves)
    if t in _LEAF_TYPES:
        leaves.append(node)
        return t
    raise _Odd


def _dict_shape(node: dict, leaves: list) -> tuple:
    # leaves inline, recursion only into containers: this runs for every resource a service reads
    out = []
    add, leaf = out.append, leaves.append
    for k, v in node.items():
        if type(k) is not str:
            raise _Odd
        add(k)
        t = type(v)
        if t is str:
            if k == "resourceType":  # which model validates it: part of the shape, not a leaf
                add(v)
                continue
            add(str)
            leaf(v)
        elif t is dict:
            add(_dict_shape(v, leaves))
        elif t is list:
            add(_list_shape(v, leaves))
        elif t in _LEAF_TYPES:
            if k == "resourceType":
                add((t,))  # not a string: the full validation says what is wrong
            add(t)
            leaf(v)
        else:
            raise _Odd
    return tuple(out)


def _list_shape(node: list, leaves: list) -> tuple:
    out = ["[]"]
    for v in node:
        t = type(v)
        if t is dict:
            out.append(_dict_shape(v, leaves))
        elif t is list:
            out.append(_list_shape(v, leaves))
        elif t in _LEAF_TYPES:
            out.append(t)
            leaves.append(v)
        else:
            raise _Odd
    return tuple(out)


def _fields(model) -> dict:
    """JSON key -> annotation of a ``fhir.resources`` model class (cached on the class)."""
    cached = model.__dict__.get("_sepsiscope_fields")
    if cached is None:
        cached = {}
        for name, f in model.model_fields.items():
            cached[f.alias or name] = f.annotation
        setattr(model, "_sepsiscope_fields", cached)
    return cached


def _strip_optional(ann):
    if typing.get_origin(ann) in (typing.Union, types.UnionType):  # Optional[X] and X | None
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _list_item(ann):
    ann = _strip_optional(ann)
    if typing.get_origin(ann) in (list, typing.List):
        return typing.get_args(ann)[0]
    return None


def _model_of(ann):
    """The model class behind a complex-type annotation (``abc.CodeableConceptType``), or None."""
    get = getattr(_strip_optional(ann), "get_model_klass", None)
    return get() if callable(get) else None


def _leaf_annotations(node, model, out: list) -> None:
    """Append, in :func:`shape_of`'s walk order, the annotation that validates each leaf of
    ``node`` (a dict validated by ``model``); raise LookupError where a leaf cannot be typed."""
    fields = _fields(model)
    for k, v in node.items():
        if k == "resourceType":
            if type(v) is not str:
                raise LookupError(k)
            continue
        if k.startswith("_") or k not in fields:
            raise LookupError(k)  # primitive extensions, or a key the full validation judged
        ann = fields[k]
        if type(v) is list:
            item = _list_item(ann)
            if item is None:
                raise LookupError(k)
            for x in v:
                _value_annotations(x, item, out)
        else:
            _value_annotations(v, ann, out)


def _value_annotations(v, ann, out: list) -> None:
    if type(v) is dict:
        model = _model_of(ann)
        if model is None or getattr(model, "get_resource_type", lambda: None)() in ("Resource", "DomainResource"):
            raise LookupError(ann)  # a contained resource: its model depends on its resourceType
        _leaf_annotations(v, model, out)
    elif type(v) is list:
        raise LookupError(ann)  # a list where the element is not a list: the full validation decides
    else:
        if _model_of(ann) is not None:
            raise LookupError(ann)  # a primitive where a complex element is expected
        out.append(ann)


class ShapeValidator:
    """A drop-in for :func:`ehr.sources.fhir.validate_resource` (same verdicts, same errors) that
    validates resources shaped like an accepted one by their leaf values alone.

    Parameters
    ----------
    max_shapes, max_values : int
        Bounds on the shapes and on the leaf values kept (cleared when exceeded).

    Attributes
    ----------
    fast, full : int
        Resources accepted by their leaves, and resources validated in full.
    """

    def __init__(self, max_shapes: int = 10_000, max_values: int = 500_000):
        self.max_shapes, self.max_values = max_shapes, max_values
        self._plans: dict = {}
        self._passed: set = set()
        self._adapters: dict = {}
        self.fast = self.full = 0

    def __call__(self, resource: dict, loc: tuple = ()) -> None:
        leaves: list = []
        try:
            shape = shape_of(resource, leaves)
        except (_Odd, RecursionError):
            shape = None
        plan = self._plans.get(shape, _NO_PLAN) if shape is not None else None
        if plan is not _NO_PLAN and plan is not None and self._leaves_pass(plan, leaves):
            self.fast += 1
            return
        self.full += 1
        validate_resource(resource, loc)  # raises what it always raises
        if shape is not None and plan is _NO_PLAN:
            self._learn(shape, resource, leaves)

    def _leaves_pass(self, plan, leaves) -> bool:
        passed = self._passed
        for (key, adapter), v in zip(plan, leaves):
            seen = (key, type(v), v)
            if seen in passed:
                continue
            try:
                adapter.validate_python(v)
            except Exception:  # noqa: BLE001 - pydantic's ValidationError, or a validator's own error
                return False
            if len(passed) >= self.max_values:
                passed.clear()
            passed.add(seen)
        return True

    def _learn(self, shape, resource: dict, leaves: list) -> None:
        if len(self._plans) >= self.max_shapes:
            self._plans.clear()
        anns: list = []
        try:
            _leaf_annotations(resource, _model(resource["resourceType"]), anns)
        except (LookupError, TypeError, AttributeError):
            self._plans[shape] = None  # no plan: always validated in full
            return
        if len(anns) != len(leaves):
            self._plans[shape] = None
            return
        plan = tuple(self._adapter(a) for a in anns)
        self._plans[shape] = plan
        for (key, _), v in zip(plan, leaves):  # the full validation accepted these values
            self._passed.add((key, type(v), v))

    def _adapter(self, ann):
        from pydantic import TypeAdapter

        key = id(ann)  # the annotation objects live on the model classes, as long as the process
        if key not in self._adapters:
            self._adapters[key] = (key, TypeAdapter(ann))
        return self._adapters[key]
