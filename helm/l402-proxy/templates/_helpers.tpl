{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "l402-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release + chart, unless the release name already contains the chart name. */}}
{{- define "l402-proxy.fullname" -}}
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

{{- define "l402-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "l402-proxy.labels" -}}
helm.sh/chart: {{ include "l402-proxy.chart" . }}
{{ include "l402-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "l402-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "l402-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "l402-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "l402-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "l402-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret holding the wallet credentials and the admin token. */}}
{{- define "l402-proxy.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "l402-proxy.fullname" .) }}
{{- end }}

{{- define "l402-proxy.sidecarSnippetName" -}}
{{- printf "%s-sidecar" (include "l402-proxy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Paths inside the pod. */}}
{{- define "l402-proxy.configDir" -}}/etc/l402-proxy/config{{- end }}
{{- define "l402-proxy.secretsDir" -}}/etc/l402-proxy/secrets{{- end }}
{{- define "l402-proxy.caDir" -}}/etc/l402-proxy/ca{{- end }}
{{- define "l402-proxy.dataDir" -}}/var/lib/l402-proxy{{- end }}
{{/* Sidecar mode, generated CA: where the proxy writes the CA cert that agent containers read. */}}
{{- define "l402-proxy.caPublicDir" -}}/var/run/l402-proxy-ca{{- end }}
{{/* Where agent containers mount the CA certificate (sidecar snippet). */}}
{{- define "l402-proxy.agentCaDir" -}}/etc/l402-proxy-ca{{- end }}

{{- define "l402-proxy.sidecar" -}}
{{- eq .Values.mode "sidecar" }}
{{- end }}

{{/* The ledger backend: store.backend, or by mode when "" (gateway: sqlite, sidecar: postgres). */}}
{{- define "l402-proxy.storeBackend" -}}
{{- .Values.store.backend | default (ternary "postgres" "sqlite" (eq .Values.mode "sidecar")) }}
{{- end }}

{{/* The environment variable the proxy reads the PostgreSQL URL from (store.postgres.url_env). */}}
{{- define "l402-proxy.storeUrlEnv" -}}L402_STORE_URL{{- end }}
{{- define "l402-proxy.storeCaDir" -}}/etc/l402-proxy/store-ca{{- end }}

{{/* Checks that cannot be expressed in values.schema.json. */}}
{{- define "l402-proxy.validate" -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: enable at most one, or Prometheus scrapes every pod twice" }}
{{- end }}
{{- if and (eq .Values.mode "sidecar") .Values.metrics.serviceMonitor.enabled }}
{{- fail "metrics.serviceMonitor needs the gateway Service: in sidecar mode use metrics.podMonitor (it selects the agent pods by the label the snippet adds)" }}
{{- end }}
{{- $store := include "l402-proxy.storeBackend" . }}
{{- $pg := .Values.store.postgres }}
{{- if and (eq $store "postgres") (not $pg.existingSecret) }}
{{- if and (eq .Values.mode "sidecar") (not .Values.store.backend) }}
{{- fail "sidecar mode uses the shared PostgreSQL ledger by default, and store.postgres.existingSecret is empty: name an existing Secret whose key store.postgres.urlKey holds postgres://user:password@host:5432/db (the chart never renders it), or set store.backend=sqlite for a per-pod ledger in an emptyDir (budgets reset with the pod)" }}
{{- else }}
{{- fail "store.backend is postgres but store.postgres.existingSecret is empty: name an existing Secret whose key store.postgres.urlKey holds postgres://user:password@host:5432/db (the chart never renders the URL)" }}
{{- end }}
{{- end }}
{{- if and (eq $store "sqlite") (or $pg.existingSecret $pg.ca.existingSecret) }}
{{- fail "store.postgres.existingSecret / store.postgres.ca.existingSecret are set but the ledger is SQLite: set store.backend=postgres to use them, or unset them" }}
{{- end }}
{{- if eq .Values.mode "gateway" }}
{{- if and (gt (int .Values.replicaCount) 1) (ne $store "postgres") }}
{{- fail "replicaCount > 1 with store.backend sqlite: the SQLite ledger is per pod, so budgets and the no-double-payment guarantee would hold per replica only. Run one replica, or use the shared ledger: store.backend=postgres + store.postgres.existingSecret" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.ca.existingSecret) }}
{{- fail "replicaCount > 1 needs ca.existingSecret: every replica must sign with ONE CA that agents trust, while a generated CA would be a different one in each pod. Create a kubernetes.io/tls Secret (e.g. a cert-manager CA Certificate) and name it in ca.existingSecret" }}
{{- end }}
{{- end }}
{{- $backend := .Values.config.wallet.backend }}
{{- $k := .Values.secrets.keys }}
{{- if not $k.adminToken }}
{{- fail "secrets.keys.adminToken must name the admin token's key in the Secret (the admin listener serves the probes and needs a token)" }}
{{- end }}
{{- if and (eq $backend "lnbits") (not $k.lnbitsAdminKey) }}{{ fail "wallet.backend lnbits needs secrets.keys.lnbitsAdminKey" }}{{ end }}
{{- if and (eq $backend "lnd") (not $k.lndMacaroon) }}{{ fail "wallet.backend lnd needs secrets.keys.lndMacaroon" }}{{ end }}
{{- if and (eq $backend "cln") (not $k.clnRune) }}{{ fail "wallet.backend cln needs secrets.keys.clnRune" }}{{ end }}
{{- if and (eq $backend "nwc") (not $k.nwcUri) }}{{ fail "wallet.backend nwc needs secrets.keys.nwcUri" }}{{ end }}
{{- if eq .Values.mode "sidecar" }}
{{- $names := list }}
{{- range .Values.config.agents }}{{ $names = append $names .name }}{{ end }}
{{- if not (has .Values.sidecar.agentName $names) }}
{{- fail (printf "sidecar.agentName %q is not one of config.agents (%s): the snippet's agent would be refused with 407" .Values.sidecar.agentName (join ", " $names)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The proxy's config file, from .Values.config plus what the chart owns. */}}
{{- define "l402-proxy.config" -}}
{{- $c := .Values.config }}
{{- $w := $c.wallet }}
{{- $sidecar := eq .Values.mode "sidecar" }}
{{- $secrets := include "l402-proxy.secretsDir" . }}
{{- $data := include "l402-proxy.dataDir" . }}
# Rendered by the l402-proxy Helm chart (release {{ .Release.Name }}, mode {{ .Values.mode }}).
# Keys: config.example.yaml. Secrets are files under {{ $secrets }} (from Secret {{ include "l402-proxy.secretName" . }}).
listen: {{ ternary "127.0.0.1" "0.0.0.0" $sidecar }}:{{ .Values.service.proxyPort }}
admin:
  listen: 0.0.0.0:{{ .Values.service.adminPort }}
  token_file: {{ $secrets }}/{{ .Values.secrets.keys.adminToken }}
  {{- if not $sidecar }}
  # The Service's names (the admin port answers only requests naming it; the pod IP and
  # localhost always work).
  {{- $svc := include "l402-proxy.fullname" . }}
  hosts: [{{ $svc }}, {{ $svc }}.{{ .Release.Namespace }}, {{ $svc }}.{{ .Release.Namespace }}.svc, {{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local]
  {{- end }}
  {{- if .Values.metrics.enabled }}
  # Prometheus scrapes the pod IP without a token (pod annotations cannot carry one); off
  # loopback /metrics would otherwise need the admin token.
  metrics_public: true
  {{- end }}
tls:
{{- if .Values.ca.existingSecret }}
  ca_cert: {{ include "l402-proxy.caDir" . }}/ca.pem
  ca_key: {{ include "l402-proxy.caDir" . }}/ca-key.pem
{{- else if $sidecar }}
  ca_cert: {{ include "l402-proxy.caPublicDir" . }}/ca.pem
  ca_key: {{ $data }}/ca-key.pem
{{- else }}
  ca_cert: {{ $data }}/ca.pem
  ca_key: {{ $data }}/ca-key.pem
{{- end }}
  intercept: {{ $c.tls.intercept | default (list "*") | toJson }}
  upstream_roots: {{ $c.tls.upstream_roots | default (list) | toJson }}
guard:
  allow_private: {{ $c.guard.allow_private | default false }}
  allow: {{ $c.guard.allow | default (list) | toJson }}
wallet:
  backend: {{ $w.backend }}
  {{- with $w.network }}
  network: {{ . }}
  {{- end }}
  max_fee_sats: {{ $w.max_fee_sats | int64 }}
  payment_timeout_secs: {{ $w.payment_timeout_secs | int64 }}
  {{- if eq $w.backend "lnbits" }}
  lnbits:
    url: {{ $w.lnbits.url | quote }}
    admin_key_file: {{ $secrets }}/{{ .Values.secrets.keys.lnbitsAdminKey }}
  {{- else if eq $w.backend "lnd" }}
  lnd:
    url: {{ $w.lnd.url | quote }}
    macaroon_file: {{ $secrets }}/{{ .Values.secrets.keys.lndMacaroon }}
    {{- with .Values.secrets.keys.lndTlsCert }}
    tls_cert_file: {{ $secrets }}/{{ . }}
    {{- end }}
  {{- else if eq $w.backend "cln" }}
  cln:
    url: {{ $w.cln.url | quote }}
    rune_file: {{ $secrets }}/{{ .Values.secrets.keys.clnRune }}
    {{- with .Values.secrets.keys.clnTlsCert }}
    tls_cert_file: {{ $secrets }}/{{ . }}
    {{- end }}
  {{- else if eq $w.backend "nwc" }}
  nwc:
    uri_file: {{ $secrets }}/{{ .Values.secrets.keys.nwcUri }}
  {{- else if eq $w.backend "dev" }}
  dev:
    {{- toYaml $w.dev | nindent 4 }}
  {{- end }}
store:
{{- if eq (include "l402-proxy.storeBackend" .) "postgres" }}
{{- $pg := .Values.store.postgres }}
  # Shared by every replica and sidecar using this database. The URL (a secret) is in the
  # environment, from Secret {{ $pg.existingSecret }} key {{ $pg.urlKey }}.
  backend: postgres
  postgres:
    url_env: {{ include "l402-proxy.storeUrlEnv" . }}
    {{- with $pg.tls }}
    tls: {{ . }}
    {{- end }}
    {{- if $pg.ca.existingSecret }}
    ca_file: {{ include "l402-proxy.storeCaDir" . }}/ca.pem
    {{- end }}
    {{- if $pg.poolSize }}
    pool_size: {{ $pg.poolSize | int }}
    {{- end }}
{{- else }}
  backend: sqlite
  path: {{ $data }}/l402-proxy.db
{{- end }}
http:
  {{- toYaml $c.http | nindent 2 }}
{{- with $c.operator_limits }}
operator_limits:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $c.agents }}
agents:
  {{- toYaml $c.agents | nindent 2 }}
{{- else }}
agents: []
{{- end }}
{{- end }}

{{/* Items of the credentials Secret the chosen backend needs (a missing item would keep the pod from starting). */}}
{{- define "l402-proxy.secretItems" -}}
{{- $k := .Values.secrets.keys }}
{{- $b := .Values.config.wallet.backend }}
{{- $items := list $k.adminToken }}
{{- if eq $b "lnbits" }}{{ $items = append $items $k.lnbitsAdminKey }}{{ end }}
{{- if eq $b "lnd" }}{{ $items = append $items $k.lndMacaroon }}{{ with $k.lndTlsCert }}{{ $items = append $items . }}{{ end }}{{ end }}
{{- if eq $b "cln" }}{{ $items = append $items $k.clnRune }}{{ with $k.clnTlsCert }}{{ $items = append $items . }}{{ end }}{{ end }}
{{- if eq $b "nwc" }}{{ $items = append $items $k.nwcUri }}{{ end }}
{{- range $items }}
- key: {{ . }}
  path: {{ . }}
{{- end }}
{{- end }}

{{/* The proxy container. Used as a regular container (gateway) and as a native sidecar. */}}
{{- define "l402-proxy.container" -}}
{{- $sidecar := eq .Values.mode "sidecar" }}
name: l402-proxy
image: {{ include "l402-proxy.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- if $sidecar }}
# A native sidecar (Kubernetes >= 1.29): started before the app containers, which wait for its
# startupProbe (/readyz), kept running alongside them and stopped after them.
restartPolicy: Always
{{- end }}
args: ["run", "--config", "{{ include "l402-proxy.configDir" . }}/config.yaml", "--log-format", {{ .Values.logFormat | quote }}]
env:
  - name: RUST_LOG
    value: {{ .Values.logLevel | quote }}
  {{- if eq (include "l402-proxy.storeBackend" .) "postgres" }}
  - name: {{ include "l402-proxy.storeUrlEnv" . }}
    valueFrom:
      secretKeyRef:
        name: {{ .Values.store.postgres.existingSecret }}
        key: {{ .Values.store.postgres.urlKey }}
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - name: l402-proxy
    containerPort: {{ .Values.service.proxyPort }}
    protocol: TCP
  - name: l402-admin
    containerPort: {{ .Values.service.adminPort }}
    protocol: TCP
{{- with .Values.probes.startup }}
{{- if .enabled }}
startupProbe:
  httpGet:
    {{- if $sidecar }}
    # Ready (ledger restored, pending payments reconciled) before the agent containers start.
    path: /readyz
    {{- else }}
    path: /healthz
    {{- end }}
    port: l402-admin
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with .Values.probes.liveness }}
{{- if .enabled }}
livenessProbe:
  httpGet:
    path: /healthz
    port: l402-admin
  initialDelaySeconds: {{ .initialDelaySeconds }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with .Values.probes.readiness }}
{{- if .enabled }}
readinessProbe:
  httpGet:
    path: /readyz
    port: l402-admin
  initialDelaySeconds: {{ .initialDelaySeconds }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: l402-proxy-config
    mountPath: {{ include "l402-proxy.configDir" . }}
    readOnly: true
  - name: l402-proxy-secrets
    mountPath: {{ include "l402-proxy.secretsDir" . }}
    readOnly: true
  {{- if .Values.ca.existingSecret }}
  - name: l402-proxy-ca
    mountPath: {{ include "l402-proxy.caDir" . }}
    readOnly: true
  {{- else if $sidecar }}
  - name: l402-proxy-ca-public
    mountPath: {{ include "l402-proxy.caPublicDir" . }}
  {{- end }}
  {{- if and (eq (include "l402-proxy.storeBackend" .) "postgres") .Values.store.postgres.ca.existingSecret }}
  - name: l402-proxy-store-ca
    mountPath: {{ include "l402-proxy.storeCaDir" . }}
    readOnly: true
  {{- end }}
  - name: l402-proxy-data
    mountPath: {{ include "l402-proxy.dataDir" . }}
  - name: l402-proxy-tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The proxy's volumes. The data volume: a PVC in gateway mode on SQLite with persistence, else an emptyDir. */}}
{{- define "l402-proxy.volumes" -}}
{{- $sidecar := eq .Values.mode "sidecar" }}
{{- $postgres := eq (include "l402-proxy.storeBackend" .) "postgres" }}
- name: l402-proxy-config
  configMap:
    name: {{ include "l402-proxy.fullname" . }}
- name: l402-proxy-secrets
  secret:
    secretName: {{ include "l402-proxy.secretName" . }}
    # Gateway: group-readable with the pod's fsGroup. Sidecar: the agent pod's fsGroup is not
    # ours to set, and only the proxy container mounts this volume.
    defaultMode: {{ ternary "0444" "0440" $sidecar }}
    items:
      {{- include "l402-proxy.secretItems" . | trim | nindent 6 }}
{{- if .Values.ca.existingSecret }}
- name: l402-proxy-ca
  secret:
    secretName: {{ .Values.ca.existingSecret }}
    defaultMode: {{ ternary "0444" "0440" $sidecar }}
    items:
      - key: {{ .Values.ca.certKey }}
        path: ca.pem
      - key: {{ .Values.ca.keyKey }}
        path: ca-key.pem
{{- end }}
{{- if $sidecar }}
# What agent containers mount to trust the proxy (the CA certificate only, never its key).
- name: l402-proxy-ca-public
  {{- if .Values.ca.existingSecret }}
  secret:
    secretName: {{ .Values.ca.existingSecret }}
    defaultMode: 0444
    items:
      - key: {{ .Values.ca.certKey }}
        path: ca.pem
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- if and $postgres .Values.store.postgres.ca.existingSecret }}
# The CA of the PostgreSQL server's certificate (store.postgres.ca_file).
- name: l402-proxy-store-ca
  secret:
    secretName: {{ .Values.store.postgres.ca.existingSecret }}
    defaultMode: 0444
    items:
      - key: {{ .Values.store.postgres.ca.key }}
        path: ca.pem
{{- end }}
# The proxy's data directory: the SQLite ledger (store.backend sqlite) and a generated CA.
- name: l402-proxy-data
  {{- if and (not $sidecar) (not $postgres) .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (include "l402-proxy.fullname" .) }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: l402-proxy-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment for an agent container in the same pod as the sidecar. */}}
{{- define "l402-proxy.agentEnv" -}}
- name: L402_AGENT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.sidecar.agentKeySecret.name }}
      key: {{ .Values.sidecar.agentKeySecret.key }}
- name: HTTPS_PROXY
  value: "http://{{ .Values.sidecar.agentName }}:$(L402_AGENT_KEY)@127.0.0.1:{{ .Values.service.proxyPort }}"
- name: HTTP_PROXY
  value: "http://{{ .Values.sidecar.agentName }}:$(L402_AGENT_KEY)@127.0.0.1:{{ .Values.service.proxyPort }}"
- name: https_proxy
  value: "$(HTTPS_PROXY)"
- name: http_proxy
  value: "$(HTTP_PROXY)"
- name: NO_PROXY
  value: "localhost,127.0.0.1"
- name: no_proxy
  value: "localhost,127.0.0.1"
- name: SSL_CERT_FILE
  value: {{ include "l402-proxy.agentCaDir" . }}/ca.pem
- name: REQUESTS_CA_BUNDLE
  value: {{ include "l402-proxy.agentCaDir" . }}/ca.pem
- name: CURL_CA_BUNDLE
  value: {{ include "l402-proxy.agentCaDir" . }}/ca.pem
- name: NODE_EXTRA_CA_CERTS
  value: {{ include "l402-proxy.agentCaDir" . }}/ca.pem
- name: NODE_USE_ENV_PROXY
  value: "1"
{{- end }}

{{- define "l402-proxy.agentVolumeMounts" -}}
- name: l402-proxy-ca-public
  mountPath: {{ include "l402-proxy.agentCaDir" . }}
  readOnly: true
{{- end }}

{{/* Pod-template additions for an agent workload: a strategic-merge patch of .spec.template. */}}
{{- define "l402-proxy.sidecarPatch" -}}
spec:
  template:
    metadata:
      labels:
        l402-proxy.io/sidecar: {{ include "l402-proxy.fullname" . }}
      annotations:
        checksum/l402-proxy-config: {{ include "l402-proxy.config" . | sha256sum }}
        {{- if and .Values.metrics.enabled (not .Values.metrics.podMonitor.enabled) }}
        prometheus.io/scrape: "true"
        prometheus.io/path: /metrics
        prometheus.io/port: {{ .Values.service.adminPort | quote }}
        {{- end }}
    spec:
      initContainers:
        - {{ include "l402-proxy.container" . | trim | indent 10 | trim }}
      containers:
        # Merged by name into your agent container: point its HTTP clients at the sidecar and
        # make them trust the proxy's CA.
        - name: {{ .Values.sidecar.agentContainer }}
          env:
            {{- include "l402-proxy.agentEnv" . | trim | nindent 12 }}
          volumeMounts:
            {{- include "l402-proxy.agentVolumeMounts" . | trim | nindent 12 }}
      volumes:
        {{- include "l402-proxy.volumes" . | trim | nindent 8 }}
{{- end }}
