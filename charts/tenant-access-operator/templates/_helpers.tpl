{{/* The chart name. */}}
{{- define "tenant-access-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: the release name, plus the chart name unless the release name has it. */}}
{{- define "tenant-access-operator.fullname" -}}
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

{{/* Name and version, for the helm.sh/chart label. */}}
{{- define "tenant-access-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels selecting the operator pods (never change across upgrades). */}}
{{- define "tenant-access-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-access-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "tenant-access-operator.labels" -}}
helm.sh/chart: {{ include "tenant-access-operator.chart" . }}
{{ include "tenant-access-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tenant-access-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "tenant-access-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tenant-access-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: asked for, or needed by more than one replica. */}}
{{- define "tenant-access-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* Namespace of the leader-election Lease. */}}
{{- define "tenant-access-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/* Name of the leader-election Lease. */}}
{{- define "tenant-access-operator.leaseName" -}}
{{- default (include "tenant-access-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "tenant-access-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The --namespaces value: the watched namespace, else the served ones (empty: all). */}}
{{- define "tenant-access-operator.namespacesArg" -}}
{{- if and .Values.watchNamespace .Values.servedNamespaces }}
{{- fail "set either watchNamespace (namespace-scoped install) or servedNamespaces (cluster-wide install), not both" }}
{{- end }}
{{- if .Values.watchNamespace }}
{{- .Values.watchNamespace }}
{{- else }}
{{- join "," .Values.servedNamespaces }}
{{- end }}
{{- end }}
