{{/*
Labels every object carries, and the subset that selects the controller Pods.
*/}}
{{- define "dpctlr.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dpctlr.labels" -}}
{{ include "dpctlr.selectorLabels" . }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: dpctl
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
"true" when several replicas must coordinate through a Lease, else "".
*/}}
{{- define "dpctlr.leaderElect" -}}
{{- if gt (int .Values.Replicas) 1 }}true{{ end }}
{{- end }}

{{/*
Name of the ClusterRoleBinding: cluster-scoped, so it names the namespace too.
*/}}
{{- define "dpctlr.nodeViewBinding" -}}
{{- printf "%s-%s-node-view" .Release.Namespace .Release.Name | trunc 253 | trimSuffix "-" }}
{{- end }}
