{{- define "hybridfast.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hybridfast.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hybridfast.labels" -}}
app.kubernetes.io/name: {{ include "hybridfast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hybridfast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hybridfast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
