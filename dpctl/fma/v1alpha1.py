"""The types of ``fma.llm-d.ai/v1alpha1``: one definition of every field, on the wire as upstream's.

Owns the pydantic models of the three kinds' ``spec`` and ``status`` (launcher contract §2.1–§2.3)
and the table of kinds with their names (§1.1). The CRDs the chart installs are generated from
these models (`dpctl.fma.crdgen`), so a field is named, typed and bounded here and only here;
wire names are the aliases (upstream's JSON names, ``env_vars`` included).

Fields whose shape is the Kubernetes API's own (a PodSpec, a LabelSelector, a Quantity) are plain
data here, marked with `KubeSchema`: the CRD takes their schema from the API server's OpenAPI, as
controller-gen embeds core types, and their meaning is checked where it is used.

What the schema cannot say (label key rules, ``--port`` in ``options``, a LauncherConfig without
an ``inference-server`` container) is checked by the controllers and reported in status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

GROUP: Final = "fma.llm-d.ai"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class KubeSchema:
    """The field's schema is the Kubernetes OpenAPI definition of this name."""

    name: str


@dataclass(frozen=True)
class Format:
    """The OpenAPI ``format`` of an integer field (Go's int32 / int64)."""

    name: str


@dataclass(frozen=True)
class ListMap:
    """A list that is a map keyed by these fields: the API server rejects duplicate keys."""

    keys: tuple[str, ...]


INT32: Final = Format("int32")
INT64: Final = Format("int64")

PodSpec = Annotated[dict[str, Any], KubeSchema("io.k8s.api.core.v1.PodSpec")]
LabelSelector = Annotated[dict[str, Any], KubeSchema("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")]
Quantity = Annotated[str | int | float, KubeSchema("io.k8s.apimachinery.pkg.api.resource.Quantity")]


class _Wire(BaseModel):
    # What the API server stores was pruned by the schema; anything else a newer version adds is
    # ignored rather than fatal. Wire names are aliases; Python names may be used too.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class Status(_Wire):
    """The status of every kind: what the controller last saw, and what is wrong with it."""

    observed_generation: Annotated[int, INT64] = Field(
        default=0,
        alias="observedGeneration",
        description="The metadata.generation this status was written for.",
    )
    errors: list[str] = Field(
        default_factory=list,
        description="Problems found in the desired state of this object; empty when none.",
    )


# --- InferenceServerConfig ------------------------------------------------------------------------


class ModelServerConfig(_Wire):
    port: Annotated[int, INT32] = Field(
        ge=1,
        le=65535,
        description="The port the vLLM instance serves on (its sleep and wake API included).",
    )
    options: str = Field(
        default="", description="vLLM's command-line options, without --port (port gives it)."
    )
    env_vars: dict[str, str] = Field(default_factory=dict, description="Environment of the vLLM instance.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Labels put on the launcher Pod while it is bound and awake. Keys must be valid label "
            "keys outside the prefixes dual-pods.llm-d.ai/, kubernetes.io/ and k8s.io/."
        ),
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Annotations put on the launcher Pod while it is bound, with the same key rules as labels."
        ),
    )


class InferenceServerConfigSpec(_Wire):
    model_server_config: ModelServerConfig = Field(
        alias="modelServerConfig", description="How to run the vLLM instance."
    )
    launcher_config_name: str = Field(
        alias="launcherConfigName", description="The LauncherConfig whose launchers run this server."
    )


# --- LauncherConfig -------------------------------------------------------------------------------


class EmbeddedObjectMeta(_Wire):
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the launcher Pods.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the launcher Pods.")


class PodTemplate(_Wire):
    metadata: EmbeddedObjectMeta = Field(
        default_factory=EmbeddedObjectMeta, description="Labels and annotations of the launcher Pods."
    )
    spec: PodSpec = Field(
        default_factory=dict,
        description="The launcher Pods' spec; it must have a container named inference-server.",
    )


class LauncherConfigSpec(_Wire):
    pod_template: PodTemplate = Field(
        default_factory=PodTemplate, alias="podTemplate", description="What launcher Pods are made of."
    )
    max_instances: Annotated[int, INT32] = Field(
        alias="maxInstances",
        ge=1,
        description="The most vLLM instances, awake and asleep, one launcher keeps.",
    )


# --- LauncherPopulationPolicy ---------------------------------------------------------------------


class ResourceRange(_Wire):
    min: Quantity | None = Field(
        default=None, description="The least allocatable amount; none means no bound."
    )
    max: Quantity | None = Field(
        default=None, description="The most allocatable amount; none means no bound."
    )


class EnhancedNodeSelector(_Wire):
    label_selector: LabelSelector = Field(alias="labelSelector", description="Which Nodes, by their labels.")
    allocatable_resources: dict[str, ResourceRange] = Field(
        default_factory=dict,
        alias="allocatableResources",
        description="Of those, the Nodes whose allocatable amount of each named resource is in range.",
    )


class CountForLauncher(_Wire):
    launcher_config_name: str = Field(alias="launcherConfigName", description="A LauncherConfig.")
    launcher_count: Annotated[int, INT32] = Field(
        alias="launcherCount", description="How many of its launchers each selected Node should have."
    )


class LauncherPopulationPolicySpec(_Wire):
    enhanced_node_selector: EnhancedNodeSelector = Field(
        alias="enhancedNodeSelector", description="The Nodes this policy is about."
    )
    count_for_launcher: Annotated[list[CountForLauncher], ListMap(("launcherConfigName",))] = Field(
        alias="countForLauncher", description="Launchers per selected Node, per LauncherConfig."
    )


# --- the kinds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of the group: its names (launcher contract §1.1) and its spec's type."""

    kind: str
    plural: str
    short: str
    spec: type[_Wire]
    description: str

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


INFERENCE_SERVER_CONFIG: Final = Kind(
    "InferenceServerConfig",
    "inferenceserverconfigs",
    "isc",
    InferenceServerConfigSpec,
    "How to run one vLLM server in a launcher; a requester names it to take the launcher path.",
)
LAUNCHER_CONFIG: Final = Kind(
    "LauncherConfig",
    "launcherconfigs",
    "lcfg",
    LauncherConfigSpec,
    "A kind of launcher Pod, which keeps vLLM instances warm and starts, stops and lists them.",
)
LAUNCHER_POPULATION_POLICY: Final = Kind(
    "LauncherPopulationPolicy",
    "launcherpopulationpolicies",
    "lpp",
    LauncherPopulationPolicySpec,
    "How many launchers of each LauncherConfig to keep on each Node it selects.",
)
KINDS: Final = (INFERENCE_SERVER_CONFIG, LAUNCHER_CONFIG, LAUNCHER_POPULATION_POLICY)
