{{/* The chart's name, or nameOverride; at most 63 characters (a label value). */}}
{{- define "nasrl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's resource name: fullnameOverride, or release-name (just the release when it contains the name); at most 63. */}}
{{- define "nasrl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* name-version for the helm.sh/chart label. */}}
{{- define "nasrl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on everything the chart creates. */}}
{{- define "nasrl.labels" -}}
helm.sh/chart: {{ include "nasrl.chart" . }}
{{ include "nasrl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nasrl
{{- end }}

{{/* The immutable labels that select the chart's own pods: name and instance only. */}}
{{- define "nasrl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nasrl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels the pipeline puts on its controller (search step) pods: pipelines/nasrl_pipeline.py CONTROLLER_LABELS. */}}
{{- define "nasrl.controllerPodLabels" -}}
app.kubernetes.io/name: nasrl
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: nasrl
{{- end }}

{{/* The ServiceAccount the controller's runs use: the created one, or serviceAccount.name. */}}
{{- define "nasrl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nasrl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount to bind the Role to, or set serviceAccount.create=true" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, or repository:tag (default: the chart's appVersion). */}}
{{- define "nasrl.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* fullname-SUFFIX, the fullname cut so that the whole stays within 63 characters: include "nasrl.suffixedName" (list . "SUFFIX"). */}}
{{- define "nasrl.suffixedName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "nasrl.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}
