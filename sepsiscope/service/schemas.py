"""Response models: what the OpenAPI schema documents (responses are built as plain dicts, not revalidated)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .inputs import EventsRequest

__all__ = ["ScoreResponse", "TraceResponse", "ExplainResponse", "StaysResponse", "ModelInfo", "Problem",
           "SCORE_BODY"]


class Problem(BaseModel):
    loc: list = Field(description="where in the request: ['body', 'entry', 3, 'resource', 'valueQuantity', 'code']")
    msg: str
    type: str


class Item(BaseModel):
    feature: str
    label: str
    value: float | None = Field(None, description="in the canonical unit of ehr/concepts.toml")
    unit: str
    age_h: float | None = Field(None, description="hours since the value was measured")
    state: str | None = None
    state_label: str | None = None
    weight: float | None = Field(None, description="decay weight 2^(-age/half-life)")
    alone: float | None = Field(None, description="log10 Bayes factor of the item alone")
    in_context: float | None = Field(None, description="log10 B(E) / B(E without the item)")
    contribution: float | None = Field(None, description="TreeSHAP log-odds (additive models)")
    missing: bool | None = Field(None, description="not measured (additive models credit missingness too)")


class Explanation(BaseModel):
    model: str
    kind: str = Field(description="'bayes_factors' (CPN) or 'contributions' (TreeSHAP)")
    scale: str
    risk: float | None
    total: float | None = Field(description="log10 B(E), or the summed contributions")
    prior: float | None = Field(None, description="prior log10 odds (Bayes factors)")
    posterior: float | None = Field(None, description="posterior log10 odds = prior + total")
    expected: float | None = Field(None, description="expected log-odds (TreeSHAP)")
    items: list[Item]


class Alarm(BaseModel):
    candidate: bool = Field(description="a screen with new data at or above the threshold")
    fired: bool
    silenced: bool
    silenced_by: str | None = Field(None, description="the fired alarm whose silencing window holds this one")


class ModelRef(BaseModel):
    name: str
    kind: str
    version: str


class ScoreResponse(BaseModel):
    stay_id: int
    screen_time: str
    hours_since_admit: float
    admit_time: str
    admit_time_from: str
    model: ModelRef
    risk: float
    threshold: float
    operating_point: str | None
    alarm: Alarm
    explanation: Explanation
    risk_assessment: dict = Field(description="FHIR R4 RiskAssessment")
    skipped: list[dict] = Field(description="entries not read (another resource type, status entered-in-error, ...)")
    notes: list[str] = Field(description="what the answer assumed, e.g. inputs that cannot be posted")


class TraceResponse(BaseModel):
    stay_id: int
    source: str
    admit_time: str
    onset_time: str | None
    onset_hours: float | None
    threshold: float
    operating_point: str | None
    silencing_h: float
    model: ModelRef
    points: list[dict]
    alarms: list[dict]
    silencing_windows: list[dict]


class ExplainResponse(BaseModel):
    stay_id: int
    screen_time: str
    hours_since_admit: float
    threshold: float
    explanations: list[Explanation]


class StaysResponse(BaseModel):
    total: int
    stays: list[dict]


class ModelInfo(BaseModel):
    primary: ModelRef
    compare: list[ModelRef]
    threshold: float
    operating_point: str | None
    silencing_h: float


#: the request body of POST /v1/score, for the OpenAPI schema (the body is parsed by the route itself)
SCORE_BODY = {
    "required": True,
    "content": {
        "application/fhir+json": {"schema": {"type": "object", "description": "a FHIR R4 Bundle of Observations "
                                             "(LOINC, UCUM), optionally with the Patient and Encounter"}},
        "application/json": {"schema": {"oneOf": [
            {"type": "object", "description": "a FHIR R4 Bundle"},
            EventsRequest.model_json_schema(ref_template="#/components/schemas/{model}")]}},
    },
}
