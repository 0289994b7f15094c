{{/* Names and labels shared by every object. */}}
{{- define "mlwe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlwe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "mlwe.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "mlwe.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlwe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mlwe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one role: include "mlwe.selector" (list . "cluster") */}}
{{- define "mlwe.selector" -}}
app.kubernetes.io/name: {{ include "mlwe.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "mlwe.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "mlwe.clusterServiceAccount" -}}
{{- if .Values.cluster.serviceAccount.create -}}
{{ default (printf "%s-cluster" (include "mlwe.fullname" .)) .Values.cluster.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.cluster.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "mlwe.nodeServiceAccount" -}}
{{- if .Values.node.serviceAccount.create -}}
{{ default (printf "%s-node" (include "mlwe.fullname" .)) .Values.node.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.node.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* The restricted container security context (OpenShift restricted-v2, Pod Security "restricted"). */}}
{{- define "mlwe.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Secret holding the cluster role's serving certificate, or "" for plain HTTP. */}}
{{- define "mlwe.tlsSecret" -}}
{{- if .Values.web.tls.openshiftServiceCA -}}
{{ include "mlwe.fullname" . }}-tls
{{- else -}}
{{ .Values.web.tls.secretName }}
{{- end -}}
{{- end -}}
