{{- define "conveyor.labels" -}}
app.kubernetes.io/name: conveyor-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: conveyor-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "conveyor.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
What the operator may do to pipelines and the objects it owns; the same rules cluster-wide or per namespace.
Informers need list and watch; server-side apply (ConfigMap, headless Service, PodDisruptionBudget, StatefulSet)
needs patch, and create when the object does not exist yet;
the finalizer deletes the StatefulSet, counts pods and reads the Secrets a pipeline's kafka spec names.
*/}}
{{- define "conveyor.rules" -}}
- apiGroups: [conveyor.dev]
  resources: [streampipelines]
  verbs: [list, watch, patch]
- apiGroups: [conveyor.dev]
  resources: [streampipelines/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, watch, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{- define "conveyor.webhookService" -}}
{{- printf "%s-webhook" (include "conveyor.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "conveyor.webhookSecret" -}}
{{- printf "%s-webhook-cert" (include "conveyor.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
