{{/*
Names, labels and small building blocks shared by the templates.
*/}}

{{- define "clusterhub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name: also the hub's name (settings kubernetes.hub_name), which labels
every user namespace this hub creates.
*/}}
{{- define "clusterhub.fullname" -}}
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

{{- define "clusterhub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "hub"). */}}
{{- define "clusterhub.labels" -}}
helm.sh/chart: {{ include "clusterhub.chart" .root }}
{{ include "clusterhub.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/*
Selector labels. `app.kubernetes.io/component` is part of the contract with the user
namespaces' NetworkPolicies (spawner/kubeobjects.py selects hub, proxy and dask-gateway pods
in the hub namespace by it).
*/}}
{{- define "clusterhub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clusterhub.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Object names. Services have fixed names the hub's settings refer to. */}}
{{- define "clusterhub.hubSecretName" -}}{{ include "clusterhub.fullname" . }}-hub{{- end -}}
{{- define "clusterhub.gatewayServiceName" -}}dask-gateway{{- end -}}
{{- define "clusterhub.hubServiceAccountName" -}}{{ include "clusterhub.fullname" . }}-hub{{- end -}}
{{- define "clusterhub.gatewayServiceAccountName" -}}{{ include "clusterhub.fullname" . }}-gateway{{- end -}}
{{/* The ClusterRoles the hub binds in each user's namespace, for itself and the gateway. */}}
{{- define "clusterhub.hubSpaceRole" -}}{{ .Release.Namespace }}-{{ include "clusterhub.fullname" . }}-hub-in-space{{- end -}}
{{- define "clusterhub.gatewaySpaceRole" -}}{{ .Release.Namespace }}-{{ include "clusterhub.fullname" . }}-gateway-in-space{{- end -}}
{{/* The platform's RBAC rules (helm/generate_rbac.py writes the file from the Python data). */}}
{{- define "clusterhub.rules" -}}{{ index (.root.Files.Get "files/rbac-rules.json" | fromJson) .key | toYaml }}{{- end -}}

{{/* "repository:tag" of one entry of .Values.images; tag "" means the chart's appVersion. */}}
{{- define "clusterhub.image" -}}
{{- $image := index .root.Values.images .name -}}
{{- printf "%s:%s" $image.repository (toString ($image.tag | default .root.Chart.AppVersion)) -}}
{{- end -}}

{{- define "clusterhub.imagePullSecrets" -}}
{{- if .Values.imagePullSecrets }}
imagePullSecrets:
{{- range .Values.imagePullSecrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level securityContext for the hub and the gateway (non-root). */}}
{{- define "clusterhub.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
{{- if .fsGroup }}
fsGroup: {{ .fsGroup }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level securityContext: no privilege escalation, no capabilities. */}}
{{- define "clusterhub.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ . }}
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* nodeSelector + tolerations of a component's values. */}}
{{- define "clusterhub.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A label selector for the namespaces of this hub's users (labels set by
spawner/kubeobjects.py space_labels()).
*/}}
{{- define "clusterhub.userNamespacesPeer" -}}
- namespaceSelector:
    matchLabels:
      app.kubernetes.io/managed-by: clusterhub
      hub.clusterhub.io/name: {{ include "clusterhub.fullname" . }}
{{- end -}}

{{/* Peers: pods of this release in the hub namespace with one of the given components. */}}
{{- define "clusterhub.componentPeer" -}}
- podSelector:
    matchExpressions:
      - key: app.kubernetes.io/instance
        operator: In
        values: [{{ .root.Release.Name | quote }}]
      - key: app.kubernetes.io/component
        operator: In
        values: [{{ range $i, $c := .components }}{{ if $i }}, {{ end }}{{ $c | quote }}{{ end }}]
{{- end -}}

{{/* Egress to DNS servers (port 53, anywhere: node-local caches, kube-dns, cloud DNS). */}}
{{- define "clusterhub.dnsEgress" -}}
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Egress to the Kubernetes API server (not a pod: no selector can name it). */}}
{{- define "clusterhub.kubeApiEgress" -}}
- ports:
    - {protocol: TCP, port: 443}
    - {protocol: TCP, port: 6443}
{{- end -}}
