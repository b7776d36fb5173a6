{{/*
The name of every object. The contract fixes it: the MutatingWebhookConfiguration,
the Service and the Lease are all named secret-relay.
*/}}
{{- define "secret-relay.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "secret-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the webhook pods. */}}
{{- define "secret-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secret-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{/* Common labels. */}}
{{- define "secret-relay.labels" -}}
helm.sh/chart: {{ include "secret-relay.chart" . }}
{{ include "secret-relay.selectorLabels" . }}
app.kubernetes.io/part-of: secret-relay
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The image reference. */}}
{{- define "secret-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The Service's DNS names, which the serving certificate covers. */}}
{{- define "secret-relay.dnsNames" -}}
{{- $svc := include "secret-relay.name" . -}}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson -}}
{{- end -}}

{{/* The Secret holding the serving certificate. */}}
{{- define "secret-relay.tlsSecretName" -}}
{{- printf "%s-tls" (include "secret-relay.name" .) -}}
{{- end -}}

{{/*
The chart-generated CA and serving certificate (cert-manager off), as a dict with
caCert, tlsCert and tlsKey, all PEM. It reuses the Secret of a previous release when it
holds all three, so that upgrades do not rotate the certificate; otherwise it generates
new ones. The result is memoised in .Values so that the Secret and the
MutatingWebhookConfiguration see the same certificate.
*/}}
{{- define "secret-relay.generatedCerts" -}}
{{- if not .Values._generatedCerts -}}
{{- $certs := dict -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "secret-relay.tlsSecretName" .) -}}
{{- if and $existing $existing.data (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
{{- $_ := set $certs "caCert" (index $existing.data "ca.crt" | b64dec) -}}
{{- $_ := set $certs "tlsCert" (index $existing.data "tls.crt" | b64dec) -}}
{{- $_ := set $certs "tlsKey" (index $existing.data "tls.key" | b64dec) -}}
{{- else -}}
{{- $days := int .Values.certificates.generatedValidityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "secret-relay.name" .)) $days -}}
{{- $dnsNames := include "secret-relay.dnsNames" . | fromJsonArray -}}
{{- $cert := genSignedCert (index $dnsNames 0) nil $dnsNames $days $ca -}}
{{- $_ := set $certs "caCert" $ca.Cert -}}
{{- $_ := set $certs "tlsCert" $cert.Cert -}}
{{- $_ := set $certs "tlsKey" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "_generatedCerts" $certs -}}
{{- end -}}
{{- toJson .Values._generatedCerts -}}
{{- end -}}
