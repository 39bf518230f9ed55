{{/* pgbouncer.ini of the chart; the ConfigMap holds it and the pod template carries its checksum. */}}
{{- define "auth-platform.pgbouncerIni" -}}
{{- $pgb := .Values.pgbouncer -}}
[databases]
{{ .Values.database.name }} = host={{ include "auth-platform.postgresHost" . }} port={{ include "auth-platform.postgresPort" . }} dbname={{ .Values.database.name }}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
; no unix socket: the root filesystem is read-only
unix_socket_dir =
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/run/userlist.txt
pool_mode = {{ $pgb.poolMode }}
max_client_conn = {{ int $pgb.maxClientConn }}
default_pool_size = {{ int $pgb.defaultPoolSize }}
min_pool_size = {{ int $pgb.minPoolSize }}
reserve_pool_size = {{ int $pgb.reservePoolSize }}
reserve_pool_timeout = 3
max_db_connections = {{ int $pgb.maxDbConnections }}
{{- if gt (int $pgb.maxPreparedStatements) 0 }}
max_prepared_statements = {{ int $pgb.maxPreparedStatements }}
{{- end }}
server_tls_sslmode = {{ $pgb.serverTlsSslmode }}
server_reset_query =
server_check_query = select 1
; after PostgreSQL comes back, log in again within 2 s, not the default 15: until then every request is 503
server_login_retry = 2
server_lifetime = 3600
server_idle_timeout = 600
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
stats_period = 60
{{- end -}}
