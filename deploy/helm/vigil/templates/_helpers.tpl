{{- /*
One-line helpers only, used with `template`: every object writes its labels out in full (the
chart renders the same under `helm template` and under `cargo xtask deploy-check`, whose Go
template engine has no `include`).
*/ -}}

{{- define "vigil.fullname" -}}
{{- if eq .Release.Name "vigil" -}}vigil{{- else -}}{{ .Release.Name }}-vigil{{- end -}}
{{- end -}}

{{- define "vigil.serviceAccount" -}}
{{- if .Values.serviceAccount.name -}}{{ .Values.serviceAccount.name }}{{- else -}}{{ template "vigil.fullname" . }}{{- end -}}
{{- end -}}

{{- define "vigil.secretName" -}}
{{- if .Values.clickhouseSecret.existingSecret -}}{{ .Values.clickhouseSecret.existingSecret }}{{- else -}}{{ template "vigil.fullname" . }}-clickhouse{{- end -}}
{{- end -}}
