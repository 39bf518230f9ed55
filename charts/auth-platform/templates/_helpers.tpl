{{/*
Names, labels, images and the shared pieces of every pod spec.
The operator's templates (operator.yaml, operator-rbac.yaml) use these too.
*/}}

{{- define "auth-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name: "<release>-auth-platform", or the release name when it already holds the chart name. */}}
{{- define "auth-platform.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels without a component (shared objects such as the ServiceAccount). */}}
{{- define "auth-platform.labels" -}}
helm.sh/chart: {{ include "auth-platform.chart" . }}
{{ include "auth-platform.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: auth-platform
{{- end -}}

{{- define "auth-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auth-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: include "auth-platform.componentLabels" (dict "ctx" $ "component" "server") */}}
{{- define "auth-platform.componentLabels" -}}
{{ include "auth-platform.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "auth-platform.componentSelectorLabels" -}}
{{ include "auth-platform.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Object names, in one place so templates, the operator and the docs agree. */}}
{{- define "auth-platform.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "auth-platform.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.configMapName" -}}
{{- printf "%s-config" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{/* Written by the operator from an AuthConfig; optional, and listed after the chart's ConfigMap so it wins. */}}
{{- define "auth-platform.overridesConfigMapName" -}}
{{- printf "%s-overrides" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{/* PgBouncer settings written by the operator: a pgbouncer.ini fragment appended to the chart's. */}}
{{- define "auth-platform.pgbouncerOverridesConfigMapName" -}}
{{- printf "%s-pgbouncer-overrides" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{- define "auth-platform.credentialsSecretName" -}}
{{- default (printf "%s-credentials" (include "auth-platform.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "auth-platform.signingKeysSecretName" -}}
{{- default (printf "%s-signing-keys" (include "auth-platform.fullname" .)) .Values.signingKeys.existingSecret -}}
{{- end -}}

{{- define "auth-platform.cleanupCronJobName" -}}
{{- printf "%s-cleanup" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{- define "auth-platform.pgbouncerName" -}}
{{- printf "%s-pgbouncer" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{- define "auth-platform.redisName" -}}
{{- printf "%s-redis" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{- define "auth-platform.postgresqlName" -}}
{{- printf "%s-postgresql" (include "auth-platform.fullname" .) -}}
{{- end -}}

{{/*
The OAuth issuer (AUTH_ISSUER): oauth.issuer; else the deprecated config.AUTH_JWT_ISSUER; else https://<ingress.host>
with the Ingress on; else the Service's in-cluster URL. Apps and resource servers must use exactly this URL.
*/}}
{{- define "auth-platform.issuer" -}}
{{- $legacy := get (.Values.config | default dict) "AUTH_JWT_ISSUER" | default "" -}}
{{- if .Values.oauth.issuer -}}
{{- .Values.oauth.issuer | trimSuffix "/" -}}
{{- else if $legacy -}}
{{- $legacy | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "https://%s" .Values.ingress.host -}}
{{- else -}}
{{- $port := int .Values.service.port -}}
{{- printf "http://%s.%s.svc.cluster.local%s" (include "auth-platform.fullname" .) .Release.Namespace (ternary "" (printf ":%d" $port) (eq $port 80)) -}}
{{- end -}}
{{- end -}}

{{/* image reference: include "auth-platform.image" (dict "image" .Values.image "ctx" $) */}}
{{- define "auth-platform.image" -}}
{{- $tag := default .ctx.Chart.AppVersion (toString (default "" .image.tag)) -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The operator runs from the service image unless operator.image says otherwise. */}}
{{- define "auth-platform.operatorImage" -}}
{{- $img := .Values.operator.image | default dict -}}
{{- $merged := dict "repository" (default .Values.image.repository $img.repository) "tag" (default .Values.image.tag $img.tag) "digest" (ternary .Values.image.digest "" (empty $img.repository)) -}}
{{- include "auth-platform.image" (dict "image" $merged "ctx" .) -}}
{{- end -}}

{{- define "auth-platform.operatorImagePullPolicy" -}}
{{- default .Values.image.pullPolicy (.Values.operator.image | default dict).pullPolicy -}}
{{- end -}}

{{/* Namespace the operator watches: operator.watchNamespace, or the release's. */}}
{{- define "auth-platform.operatorWatchNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace -}}
{{- end -}}

{{/*
Where the database is. The service goes through PgBouncer when it is enabled; migrations and cleanup
always connect to PostgreSQL itself (DDL and advisory locks need a real session, not a pooled transaction).
*/}}
{{- define "auth-platform.postgresHost" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "auth-platform.postgresqlName" . -}}
{{- else -}}
{{- required "externalDatabase.host is required when postgresql.enabled is false" .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.postgresPort" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ int .Values.externalDatabase.port }}{{- end -}}
{{- end -}}

{{- define "auth-platform.databaseQuery" -}}
{{- if and (not .Values.postgresql.enabled) .Values.externalDatabase.params -}}
{{- printf "?%s" (trimPrefix "?" .Values.externalDatabase.params) -}}
{{- end -}}
{{- end -}}

{{/* URL for migrations and cleanup; $(DATABASE_PASSWORD) is expanded by the kubelet from the env entry before it. */}}
{{- define "auth-platform.directDatabaseUrl" -}}
{{- printf "postgresql://%s:$(DATABASE_PASSWORD)@%s:%s/%s%s" .Values.database.user (include "auth-platform.postgresHost" .) (include "auth-platform.postgresPort" .) .Values.database.name (include "auth-platform.databaseQuery" .) -}}
{{- end -}}

{{- define "auth-platform.serviceDatabaseUrl" -}}
{{- if .Values.pgbouncer.enabled -}}
{{- printf "postgresql://%s:$(DATABASE_PASSWORD)@%s:6432/%s" .Values.database.user (include "auth-platform.pgbouncerName" .) .Values.database.name -}}
{{- else -}}
{{- include "auth-platform.directDatabaseUrl" . -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "auth-platform.redisName" .) -}}
{{- else -}}
{{- $scheme := ternary "rediss" "redis" .Values.externalRedis.tls -}}
{{- $host := required "externalRedis.host is required when redis.enabled is false" .Values.externalRedis.host -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" .Values.externalRedis.auth -}}
{{- printf "%s://%s%s:%d/%d" $scheme $auth $host (int .Values.externalRedis.port) (int .Values.externalRedis.db) -}}
{{- end -}}
{{- end -}}

{{/* The env entries that carry credentials; the URLs are composed from them (passwords must be URL-safe). */}}
{{- define "auth-platform.databaseEnv" -}}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "auth-platform.credentialsSecretName" .ctx }}
      key: {{ .ctx.Values.secrets.keys.databasePassword }}
- name: AUTH_DATABASE_URL
  value: {{ ternary (include "auth-platform.directDatabaseUrl" .ctx) (include "auth-platform.serviceDatabaseUrl" .ctx) .direct | quote }}
{{- end -}}

{{- define "auth-platform.redisEnv" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.auth }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "auth-platform.credentialsSecretName" . }}
      key: {{ .Values.secrets.keys.redisPassword }}
{{- end }}
- name: AUTH_REDIS_URL
  value: {{ include "auth-platform.redisUrl" . | quote }}
{{- end -}}

{{/* envFrom of every authsvc container: the chart's settings first, then the operator's, which win. */}}
{{- define "auth-platform.envFrom" -}}
- configMapRef:
    name: {{ include "auth-platform.configMapName" . }}
- configMapRef:
    name: {{ include "auth-platform.overridesConfigMapName" . }}
    optional: true
{{- end -}}

{{/*
A ConfigMap value from a Helm value. Helm hands every number over as float64, and toString would print
2592000 as "2.592e+06"; whole numbers are printed as integers.
*/}}
{{- define "auth-platform.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (floor .) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* Restricted Pod Security Standard: include "auth-platform.podSecurityContext" (dict "uid" 10001 "gid" 10001) */}}
{{- define "auth-platform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .uid }}
runAsGroup: {{ int .gid }}
fsGroup: {{ int .gid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "auth-platform.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* "imagePullSecrets: [...]" or nothing; use as {{- with (include "auth-platform.imagePullSecrets" .) }}{{ . | nindent 6 }}{{ end }} */}}
{{- define "auth-platform.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}
