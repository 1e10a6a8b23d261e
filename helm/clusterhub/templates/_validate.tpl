{{/*
Checks values.schema.json cannot express: required values with an empty default,
contradictions between fields, and profile bounds. Each message names the field.
Included once, from hub-secret.yaml (always rendered).
*/}}
{{- define "clusterhub.validate" -}}
{{- $v := .Values -}}
{{- $fullname := include "clusterhub.fullname" . -}}
{{- if contains "---" $fullname -}}
{{- fail (printf "the release's full name %q must not contain '---' (it labels every user namespace); choose another release name or fullnameOverride" $fullname) -}}
{{- end -}}

{{- /* hub: login secrets */ -}}
{{- if not $v.hub.workshopCode -}}
{{- fail "hub.workshopCode is required: the code attendees log in with (8-128 characters), e.g. --set hub.workshopCode=tea-biscuit-42" -}}
{{- end -}}
{{- if lt (len $v.hub.workshopCode) 8 -}}
{{- fail (printf "hub.workshopCode must be 8-128 characters long, got %d" (len $v.hub.workshopCode)) -}}
{{- end -}}
{{- if and $v.hub.adminPassword (lt (len $v.hub.adminPassword) 32) -}}
{{- fail (printf "hub.adminPassword must be at least 32 characters (or empty to generate one), got %d" (len $v.hub.adminPassword)) -}}
{{- end -}}
{{- if eq $v.hub.adminPassword $v.hub.workshopCode -}}
{{- fail "hub.adminPassword must differ from hub.workshopCode" -}}
{{- end -}}

{{- /* hub: per-user subdomains need the hub's host name */ -}}
{{- if and $v.hub.subdomains.enabled (not $v.hub.subdomains.host) -}}
{{- fail "hub.subdomains.host is required with hub.subdomains.enabled: the hub's host name, e.g. hub.example.org (users are then served at <user>.hub.example.org)" -}}
{{- end -}}
{{- if and $v.hub.subdomains.host (not $v.hub.subdomains.enabled) -}}
{{- fail "hub.subdomains.host is only used with hub.subdomains.enabled=true" -}}
{{- end -}}

{{- /* gateway: one source for the database key */ -}}
{{- if and $v.gateway.encryptKey $v.gateway.existingSecret -}}
{{- fail "gateway.encryptKey and gateway.existingSecret: set one of them, not both (the key or the Secret that holds it under encrypt-key)" -}}
{{- end -}}

{{- /* hub: database */ -}}
{{- $db := $v.hub.db -}}
{{- if eq $db.type "sqlite-pvc" -}}
{{- if $db.url -}}
{{- fail "hub.db.url is only used with hub.db.type postgres or mysql (hub.db.type is sqlite-pvc)" -}}
{{- end -}}
{{- if or $db.password $db.existingSecret.name -}}
{{- fail "hub.db.password / hub.db.existingSecret are only used with hub.db.type postgres or mysql (hub.db.type is sqlite-pvc)" -}}
{{- end -}}
{{- else -}}
{{- if not $db.url -}}
{{- fail (printf "hub.db.url is required with hub.db.type=%s, e.g. %s://hub@db.example.org/jupyterhub" $db.type (ternary "postgresql" "mysql+pymysql" (eq $db.type "postgres"))) -}}
{{- end -}}
{{- $scheme := ternary "postgresql" "mysql" (eq $db.type "postgres") -}}
{{- if not (hasPrefix $scheme $db.url) -}}
{{- fail (printf "hub.db.url must start with %q for hub.db.type=%s (a SQLAlchemy URL)" $scheme $db.type) -}}
{{- end -}}
{{- if and $db.password $db.existingSecret.name -}}
{{- fail "hub.db.password and hub.db.existingSecret.name are alternatives: set one" -}}
{{- end -}}
{{- if and $v.networkPolicy.enabled (not $v.networkPolicy.hubExtraEgress) -}}
{{- fail (printf "hub.db.type=%s with networkPolicy.enabled: the hub can reach nothing outside the chart, so add the database to networkPolicy.hubExtraEgress (see examples/enterprise.yaml)" $db.type) -}}
{{- end -}}
{{- end -}}
{{- if and $db.existingSecret.name (not $db.existingSecret.key) -}}
{{- fail "hub.db.existingSecret.key is required with hub.db.existingSecret.name" -}}
{{- end -}}

{{- /* images: the hub applies one pull policy to every user pod */ -}}
{{- if ne $v.images.notebook.pullPolicy $v.images.cluster.pullPolicy -}}
{{- fail (printf "images.cluster.pullPolicy (%s) must equal images.notebook.pullPolicy (%s): the hub gives user pods one pull policy" $v.images.cluster.pullPolicy $v.images.notebook.pullPolicy) -}}
{{- end -}}

{{- /* proxy service */ -}}
{{- $svc := $v.proxy.service -}}
{{- if and $svc.nodePort (eq $svc.type "ClusterIP") -}}
{{- fail "proxy.service.nodePort needs proxy.service.type NodePort or LoadBalancer (it is ClusterIP)" -}}
{{- end -}}
{{- if and (or $svc.loadBalancerIP $svc.loadBalancerSourceRanges) (ne $svc.type "LoadBalancer") -}}
{{- fail (printf "proxy.service.loadBalancerIP / loadBalancerSourceRanges need proxy.service.type LoadBalancer (it is %s)" $svc.type) -}}
{{- end -}}

{{- /* user spaces */ -}}
{{- if hasPrefix "kube-" $v.singleuser.namespacePrefix -}}
{{- fail (printf "singleuser.namespacePrefix must not start with 'kube-', got %q" $v.singleuser.namespacePrefix) -}}
{{- end -}}
{{- if hasPrefix $v.singleuser.namespacePrefix .Release.Namespace -}}
{{- fail (printf "singleuser.namespacePrefix %q is a prefix of the release namespace %q: a user could be given the hub's own namespace" $v.singleuser.namespacePrefix .Release.Namespace) -}}
{{- end -}}
{{- $slugs := dict -}}
{{- $defaults := 0 -}}
{{- range $i, $p := $v.singleuser.profiles -}}
{{- $where := printf "singleuser.profiles[%d]" $i -}}
{{- if hasKey $slugs $p.slug -}}
{{- fail (printf "%s.slug: %q is used by two profiles" $where $p.slug) -}}
{{- end -}}
{{- $_ := set $slugs $p.slug true -}}
{{- if $p.default -}}{{- $defaults = add1 $defaults -}}{{- end -}}
{{- range $field, $b := ($p.notebook | default dict) -}}
{{- if and (hasKey $b "guarantee") (hasKey $b "limit") (gt (float64 $b.guarantee) (float64 $b.limit)) -}}
{{- fail (printf "%s.notebook.%s.guarantee (%v) exceeds %s.notebook.%s.limit (%v)" $where $field $b.guarantee $where $field $b.limit) -}}
{{- end -}}
{{- end -}}
{{- range $field := list "workers" "worker_cores" "worker_memory_gib" -}}
{{- $b := index $p $field -}}
{{- if gt (int $b.default) (int $b.max) -}}
{{- fail (printf "%s.%s.default (%d) exceeds %s.%s.max (%d)" $where $field (int $b.default) $where $field (int $b.max)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if gt $defaults 1 -}}
{{- fail (printf "singleuser.profiles: at most one profile may have default: true, %d do" $defaults) -}}
{{- end -}}

{{- /* surge capacity */ -}}
{{- if $v.prePuller.enabled -}}
{{- if not (or $v.prePuller.notebookImage $v.prePuller.clusterImage $v.prePuller.extraImages) -}}
{{- fail "prePuller.enabled but no image to pull: set prePuller.notebookImage, prePuller.clusterImage or prePuller.extraImages (or prePuller.enabled=false)" -}}
{{- end -}}
{{- end -}}

{{- /* idle culler */ -}}
{{- if gt (int $v.culler.every) (int $v.culler.timeout) -}}
{{- fail (printf "culler.every (%d s) exceeds culler.timeout (%d s): servers would outlive the timeout by more than the timeout itself" (int $v.culler.every) (int $v.culler.timeout)) -}}
{{- end -}}

{{- /* proxy: HTTPS from a Secret */ -}}
{{- if $v.proxy.https.enabled -}}
{{- if not $v.proxy.https.secretName -}}
{{- fail "proxy.https.enabled needs proxy.https.secretName: a kubernetes.io/tls Secret (tls.crt, tls.key) in the release's namespace" -}}
{{- end -}}
{{- if $v.ingress.enabled -}}
{{- fail "proxy.https.enabled and ingress.enabled: choose one (with an Ingress, its TLS comes from ingress.tls)" -}}
{{- end -}}
{{- end -}}

{{- /* ingress */ -}}
{{- if $v.ingress.enabled -}}
{{- $served := $v.ingress.hosts -}}
{{- if $v.hub.subdomains.enabled -}}
{{- $served = concat $served (list $v.hub.subdomains.host (printf "*.%s" $v.hub.subdomains.host)) -}}
{{- end -}}
{{- if not $served -}}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts (or hub.subdomains)" -}}
{{- end -}}
{{- range $i, $t := $v.ingress.tls -}}
{{- range $h := $t.hosts -}}
{{- if not (has $h $served) -}}
{{- fail (printf "ingress.tls[%d].hosts: %q is not in ingress.hosts (nor hub.subdomains' names)" $i $h) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
