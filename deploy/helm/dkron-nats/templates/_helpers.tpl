{{/* Named templates shared by the chart's manifests. */}}

{{- define "dkron-nats.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-dkron-nats, at most 40 characters so that "<fullname>-server-headless" fits in a DNS label. */}}
{{- define "dkron-nats.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dkron-nats.serverName" -}}
{{- include "dkron-nats.fullname" . }}-server
{{- end -}}

{{- define "dkron-nats.agentName" -}}
{{- include "dkron-nats.fullname" . }}-agent
{{- end -}}

{{- define "dkron-nats.headless" -}}
{{- include "dkron-nats.fullname" . }}-server-headless
{{- end -}}

{{- define "dkron-nats.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "dkron-nats.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "server"). */}}
{{- define "dkron-nats.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dkron-nats.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dkron-nats.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "dkron-nats.secretName" -}}
{{- include "dkron-nats.fullname" . -}}
{{- end -}}

{{/* "true" when no nats-server is embedded (the nodes join nats.external.urls). */}}
{{- define "dkron-nats.externalNats" -}}
{{- if .Values.nats.external.urls }}true{{ end -}}
{{- end -}}

{{/* "true" when the embedded NATS admits only credentials made from the cluster secret (the default: no
external NATS and no NATS user, password or token given). */}}
{{- define "dkron-nats.natsJwt" -}}
{{- if not (include "dkron-nats.externalNats" .) -}}
{{- with .Values.nats -}}
{{- if not (or .user .password .token .existingSecret) }}true{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dkron-nats.clusterSecretDir" -}}/etc/dkron-nats/cluster-secret{{- end -}}

{{/* The cluster secret's volume (the file nats-secret), for the servers and the agents' init container. */}}
{{- define "dkron-nats.clusterSecretVolume" -}}
- name: cluster-secret
  secret:
    secretName: {{ .Values.nats.clusterSecret.existingSecret | default (include "dkron-nats.secretName" .) | quote }}
    items:
      - key: {{ .Values.nats.clusterSecret.key | quote }}
        path: nats-secret
    defaultMode: 288  # 0440: read-only, for the owner and fsGroup
{{- end -}}

{{/* "true" when the servers keep /var/lib/dkron-nats on a PersistentVolumeClaim. */}}
{{- define "dkron-nats.persistence" -}}
{{- $enabled := .Values.servers.persistence.enabled -}}
{{- if kindIs "invalid" $enabled -}}
{{- if not (include "dkron-nats.externalNats" .) }}true{{ end -}}
{{- else if $enabled }}true{{ end -}}
{{- end -}}

{{/* DNS name of server pod number .i: <fullname>-server-<i>.<fullname>-server-headless.<ns>.svc */}}
{{- define "dkron-nats.serverHost" -}}
{{- $root := .root -}}
{{- printf "%s-%d.%s.%s.svc" (include "dkron-nats.serverName" $root) (int .i) (include "dkron-nats.headless" $root) $root.Release.Namespace -}}
{{- with $root.Values.clusterDomain }}.{{ . }}{{ end -}}
{{- end -}}

{{/* The nats URLs every node joins: the external ones, or the client port of every server pod. */}}
{{- define "dkron-nats.natsUrlArgs" -}}
{{- if include "dkron-nats.externalNats" . -}}
{{- range .Values.nats.external.urls }}
- --nats-url
- {{ . | quote }}
{{- end -}}
{{- else -}}
{{- $root := . -}}
{{- $scheme := ternary "tls" "nats" (and .Values.nats.tls.enabled (ne .Values.nats.tls.cert "") (ne .Values.nats.tls.key "")) -}}
{{- range $i := until (int .Values.servers.replicas) }}
- --nats-url
- {{ printf "%s://%s:4222" $scheme (include "dkron-nats.serverHost" (dict "root" $root "i" $i)) | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* --tag key=value for each entry of a tags map (sorted by key). */}}
{{- define "dkron-nats.tagArgs" -}}
{{- range $k, $v := . }}
- --tag
- {{ printf "%s=%v" $k $v | quote }}
{{- end -}}
{{- end -}}

{{- define "dkron-nats.tlsMountPath" -}}/etc/dkron-nats/nats-tls{{- end -}}

{{/* NATS TLS flags (files of the mounted Secret). */}}
{{- define "dkron-nats.tlsArgs" -}}
{{- with .Values.nats.tls -}}
{{- if .enabled -}}
{{- $dir := include "dkron-nats.tlsMountPath" $ -}}
{{- if .ca }}
- --nats-tls-ca
- {{ printf "%s/%s" $dir .ca | quote }}
{{- end -}}
{{- if .cert }}
- --nats-tls-cert
- {{ printf "%s/%s" $dir .cert | quote }}
{{- end -}}
{{- if .key }}
- --nats-tls-key
- {{ printf "%s/%s" $dir .key | quote }}
{{- end -}}
{{- if .serverName }}
- --nats-tls-server-name
- {{ .serverName | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Checks of combinations the schema cannot express; fails the render with a message naming the values. */}}
{{- define "dkron-nats.validate" -}}
{{- with .Values.nats -}}
{{- if .existingSecret -}}
{{- if or .user .password .token -}}
{{- fail "nats.existingSecret and nats.user/password/token are exclusive: give the credentials one way" -}}
{{- end -}}
{{- $_ := required "nats.existingSecret needs nats.existingSecretKeys.user and .password, or .token" (coalesce .existingSecretKeys.user .existingSecretKeys.password .existingSecretKeys.token) -}}
{{- end -}}
{{- $k := .existingSecretKeys -}}
{{- $user := or .user (and .existingSecret $k.user) -}}
{{- $password := or .password (and .existingSecret $k.password) -}}
{{- $token := or .token (and .existingSecret $k.token) -}}
{{- if and $user (not $password) -}}
{{- fail "nats.user needs nats.password (or nats.existingSecretKeys.password)" -}}
{{- end -}}
{{- if and $password (not $user) -}}
{{- fail "nats.password needs nats.user (or nats.existingSecretKeys.user)" -}}
{{- end -}}
{{- if and $user $token -}}
{{- fail "give NATS either a user and password or a token, not both" -}}
{{- end -}}
{{- if .tls.enabled -}}
{{- $_ := required "nats.tls.enabled needs nats.tls.secretName (an existing Secret with the PEM files)" .tls.secretName -}}
{{- if ne (empty .tls.cert) (empty .tls.key) -}}
{{- fail "nats.tls.cert and nats.tls.key go together" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment of every container: the pod's name, the NATS credentials, extra env. */}}
{{- define "dkron-nats.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- $secret := include "dkron-nats.secretName" . -}}
{{- with .Values.nats -}}
{{- if .existingSecret -}}
{{- range $var, $key := dict "DKRON_NATS_NATS_USER" .existingSecretKeys.user "DKRON_NATS_NATS_PASSWORD" .existingSecretKeys.password "DKRON_NATS_NATS_TOKEN" .existingSecretKeys.token -}}
{{- if $key }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.nats.existingSecret | quote }}
      key: {{ $key | quote }}
{{- end -}}
{{- end -}}
{{- else -}}
{{- range $var, $key := dict "DKRON_NATS_NATS_USER" (ternary "nats-user" "" (ne .user "")) "DKRON_NATS_NATS_PASSWORD" (ternary "nats-password" "" (ne .password "")) "DKRON_NATS_NATS_TOKEN" (ternary "nats-token" "" (ne .token "")) -}}
{{- if $key }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret | quote }}
      key: {{ $key | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* Volume mounts of every container: data directory, /tmp, NATS TLS files. */}}
{{- define "dkron-nats.commonVolumeMounts" -}}
- name: data
  mountPath: /var/lib/dkron-nats
- name: tmp
  mountPath: /tmp
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: {{ include "dkron-nats.tlsMountPath" . }}
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "dkron-nats.tmpVolume" -}}
- name: tmp
  emptyDir: {{ if .Values.tmpSizeLimit }}{sizeLimit: {{ .Values.tmpSizeLimit | quote }}}{{ else }}{}{{ end }}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tls.secretName | quote }}
    defaultMode: 288  # 0440: read-only, for the owner and fsGroup
{{- end -}}
{{- end -}}

{{/* Checksum of the chart-made Secret, so that pods restart when it changes. */}}
{{- define "dkron-nats.secretChecksum" -}}
{{- include (print .Template.BasePath "/secret.yaml") . | sha256sum -}}
{{- end -}}
