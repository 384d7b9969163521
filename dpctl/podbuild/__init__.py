"""Pure construction of the Pods that serve: no I/O, no asyncio.

The controller needs only what is re-exported here; the modules are:

- `nominal`: `build_runner` and the runner's names (contract §4 steps 1-7);
- `launcher`: launcher Pods from LauncherConfigs, and instance ids and launch bodies from
  InferenceServerConfigs (launcher contract §2.4, §2.5);
- `routing`: an InferenceServerConfig's routing labels and annotations, and their rules;
- `template`: the sandboxed server-patch template (Go's ``{{ .Field }}`` or Jinja's ``{{ Field }}``);
- `yamltext`: strict, bounded YAML loading;
- `smp`: Kubernetes strategic merge patch for Pod (and Node);
- `validate`: strict structural validation of a Pod, and the runner's server port;
- `hashing`: the canonical nominal hash;
- `render_cmd`: the `dpctl render-runner` subcommand (the only module doing I/O).

This package imports nothing from dpctl except `dpctl.api`, the types of `dpctl.fma.v1alpha1`,
the launcher's wire names (`dpctl.launcher.api`) and Kubernetes' name rules (`dpctl.kube.names`).
"""

from dpctl.podbuild.nominal import BuildError, Runner, build_runner, fallback_runner_name, runner_name

__all__ = ["BuildError", "Runner", "build_runner", "fallback_runner_name", "runner_name"]
