{{/* "true" when the admission webhook is installed: enabled and, for a namespace-scoped install
(which has no cluster-scoped permission to keep a caBundle current), with cert-manager. */}}
{{- define "tenant-access-operator.webhookEnabled" -}}
{{- if and .Values.webhook.enabled (or (not .Values.watchNamespace) .Values.webhook.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* Name of the webhook's Service (and of its certificate's Secret, with -tls). */}}
{{- define "tenant-access-operator.webhookName" -}}
{{- printf "%s-webhook" (include "tenant-access-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the ValidatingWebhookConfiguration: cluster-scoped, so it names the namespace. */}}
{{- define "tenant-access-operator.webhookConfigurationName" -}}
{{- printf "%s-%s" (include "tenant-access-operator.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator's webhook flags (container args). */}}
{{- define "tenant-access-operator.webhookArgs" -}}
{{- $name := include "tenant-access-operator.webhookName" . }}
- --webhook-address=0.0.0.0:{{ .Values.webhook.port }}
- --webhook-kube-qps={{ .Values.webhook.kubeQps }}
- --webhook-kube-burst={{ .Values.webhook.kubeBurst }}
{{- if .Values.webhook.certManager.enabled }}
- --webhook-cert-dir=/etc/tenant-access/webhook-tls
{{- else }}
- --webhook-namespace={{ .Release.Namespace }}
- --webhook-secret-name={{ $name }}-tls
- --webhook-configuration-name={{ include "tenant-access-operator.webhookConfigurationName" . }}
- --webhook-hosts={{ $name }}.{{ .Release.Namespace }}.svc,{{ $name }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}
{{- if .Values.webhook.clientCA.configMapName }}
- --webhook-client-ca-file=/etc/tenant-access/webhook-client-ca/{{ .Values.webhook.clientCA.key }}
{{- end }}
{{- end }}
