{{/* Names, labels and the values every template shares. */}}

{{- define "sidereal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sidereal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: sidereal
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sidereal.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .name }}
{{- end -}}

{{- define "sidereal.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* A sector's canonical name: s<scale>-x<gridX>-y<gridY>, negatives written m<n>. */}}
{{- define "sidereal.sectorName" -}}
{{- $x := int .gridX -}}{{- $y := int .gridY -}}
s{{ int .scale }}-x{{ if lt $x 0 }}m{{ sub 0 $x }}{{ else }}{{ $x }}{{ end }}-y{{ if lt $y 0 }}m{{ sub 0 $y }}{{ else }}{{ $y }}{{ end }}
{{- end -}}

{{- define "sidereal.world" -}}
{{- $names := list -}}
{{- range .Values.world.roots -}}
{{- $names = append $names (include "sidereal.sectorName" .) -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/*
A generated secret value that survives upgrades: the given value, else the one already in the
cluster, else a new random one. Args: root, secret (name), key, given, generate (a value).
*/}}
{{- define "sidereal.keptSecret" -}}
{{- if .given -}}
{{- .given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- .generate -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sidereal.replicationHost" -}}
{{ include "sidereal.fullname" . }}-replication.{{ .Release.Namespace }}.svc
{{- end -}}

{{- define "sidereal.postgresName" -}}
{{ include "sidereal.fullname" . }}-postgres
{{- end -}}
