{{/* Egress rules shared by the NetworkPolicies. */}}

{{- define "auth-platform.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/*
To the in-chart PgBouncer (only with pgbouncer.enabled): the server, and the cleanup Jobs of the operator's
CronJob, which run with the server's environment and so its database URL.
*/}}
{{- define "auth-platform.pgbouncerEgress" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "auth-platform.componentSelectorLabels" (dict "ctx" $ "component" "pgbouncer") | nindent 10 }}
  ports:
    - port: 6432
      protocol: TCP
{{- end -}}

{{/* To PostgreSQL itself: the in-chart pods, or the external database's port (at networkPolicy.externalDatabaseTo). */}}
{{- define "auth-platform.databaseEgress" -}}
{{- if .Values.postgresql.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "auth-platform.componentSelectorLabels" (dict "ctx" $ "component" "postgresql") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else -}}
- ports:
    - port: {{ int .Values.externalDatabase.port }}
      protocol: TCP
  {{- with .Values.networkPolicy.externalDatabaseTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}
