{{/*
mpgate-lib: named templates for the AWS Marketplace entitlement gate.

Every template takes the parent chart's root context (.) and reads
.Values.marketplace.entitlement, except "mpgate.entrypoint.command", which takes
(dict "context" $ "command" LIST).

  mpgate.enabled              "true" or "" : the gate is on
  mpgate.initContainer        the init container, as a list item (initContainer mode only)
  mpgate.entrypoint.command   the container command as a JSON list: /mpgate -- COMMAND...
                              in entrypoint mode, COMMAND unchanged otherwise
  mpgate.env                  the mpgate process's environment (list items)
  mpgate.volumes              the key ConfigMap volume (+ the result emptyDir in
                              initContainer mode), as list items
  mpgate.volumeMounts         the mounts of the container that runs mpgate (list items)
  mpgate.app.env              what the workload container adds to its env in the current
                              mode (entrypoint: mpgate.env; initContainer: MPGATE_RESULT_FILE)
  mpgate.app.volumeMounts     what the workload container mounts in the current mode
                              (entrypoint: mpgate.volumeMounts; initContainer: the result
                              directory read-only)
  mpgate.configMap            the ConfigMap with the public key (when publicKey is set)
  mpgate.configMapName        its name
*/}}

{{/* The effective configuration: defaults, then the chart's values; fails on bad input. */}}
{{- define "mpgate.config" -}}
{{- $defaults := dict
      "enabled" false
      "mode" "initContainer"
      "productCode" ""
      "publicKeyVersion" 1
      "publicKey" ""
      "existingConfigMap" ""
      "existingConfigMapKey" ""
      "onTransientError" "deny"
      "timeout" "30s"
      "logFormat" "json"
      "region" ""
      "extraEnv" (list)
      "resultDir" "/run/mpgate"
      "image" (dict "repository" "" "tag" "0.1.0" "pullPolicy" "IfNotPresent")
      "resources" (dict
        "requests" (dict "cpu" "10m" "memory" "16Mi")
        "limits" (dict "cpu" "200m" "memory" "64Mi")) -}}
{{- $values := dict -}}
{{- with .Values.marketplace -}}
{{- with .entitlement -}}
{{- $values = deepCopy . -}}
{{- end -}}
{{- end -}}
{{- $e := mergeOverwrite $defaults $values -}}
{{- if $e.enabled -}}
{{- if not (has $e.mode (list "initContainer" "entrypoint")) -}}
{{- fail (printf "marketplace.entitlement.mode must be \"initContainer\" or \"entrypoint\", not %q" (toString $e.mode)) -}}
{{- end -}}
{{- if not (toString $e.productCode | trim) -}}
{{- fail "marketplace.entitlement.productCode is required when marketplace.entitlement.enabled is true: set the product code from the AWS Marketplace Management Portal (e.g. prod-abc123)" -}}
{{- end -}}
{{- if not (regexMatch "^[1-9][0-9]*$" (toString $e.publicKeyVersion)) -}}
{{- fail (printf "marketplace.entitlement.publicKeyVersion must be an integer >= 1, not %q" (toString $e.publicKeyVersion)) -}}
{{- end -}}
{{- if not (has (toString $e.onTransientError) (list "deny" "allow")) -}}
{{- fail (printf "marketplace.entitlement.onTransientError must be \"deny\" or \"allow\", not %q" (toString $e.onTransientError)) -}}
{{- end -}}
{{- if and $e.publicKey $e.existingConfigMap -}}
{{- fail "marketplace.entitlement: set publicKey or existingConfigMap, not both" -}}
{{- end -}}
{{- if not (or $e.publicKey $e.existingConfigMap) -}}
{{- fail "marketplace.entitlement: set publicKey (the PEM from the AWS Marketplace Management Portal) or existingConfigMap (a ConfigMap holding it)" -}}
{{- end -}}
{{- if and (eq $e.mode "initContainer") (not $e.image.repository) -}}
{{- fail "marketplace.entitlement.image.repository is required in initContainer mode: the mpgate image (pushed to your product's Marketplace ECR repository)" -}}
{{- end -}}
{{- end -}}
{{- toJson $e -}}
{{- end -}}

{{- define "mpgate.enabled" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled -}}true{{- end -}}
{{- end -}}

{{- define "mpgate.configMapName" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.existingConfigMap -}}
{{- $e.existingConfigMap -}}
{{- else -}}
{{- printf "%s-mpgate-public-key" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mpgate.keyFileName" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.existingConfigMap $e.existingConfigMapKey -}}
{{- $e.existingConfigMapKey -}}
{{- else -}}
{{- printf "key-%s.pem" (toString $e.publicKeyVersion) -}}
{{- end -}}
{{- end -}}

{{- define "mpgate.configMap" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled $e.publicKey (not $e.existingConfigMap) }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "mpgate.configMapName" . }}
  labels:
    app.kubernetes.io/name: mpgate
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
data:
  {{ include "mpgate.keyFileName" . }}: |
    {{- $e.publicKey | trim | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "mpgate.env" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
- name: MPGATE_PRODUCT_CODE
  value: {{ $e.productCode | toString | quote }}
- name: MPGATE_PUBLIC_KEY_VERSION
  value: {{ $e.publicKeyVersion | toString | quote }}
- name: MPGATE_PUBLIC_KEY_FILE
  value: {{ printf "/etc/mpgate/%s" (include "mpgate.keyFileName" .) | quote }}
- name: MPGATE_TIMEOUT
  value: {{ $e.timeout | toString | quote }}
- name: MPGATE_ON_TRANSIENT_ERROR
  value: {{ $e.onTransientError | quote }}
- name: MPGATE_LOG_FORMAT
  value: {{ $e.logFormat | quote }}
{{- if eq $e.mode "initContainer" }}
- name: MPGATE_RESULT_FILE
  value: {{ printf "%s/result.json" $e.resultDir | quote }}
{{- end }}
{{- with $e.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $e.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.volumes" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
- name: mpgate-public-key
  configMap:
    name: {{ include "mpgate.configMapName" . }}
{{- if eq $e.mode "initContainer" }}
- name: mpgate-run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.volumeMounts" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
- name: mpgate-public-key
  mountPath: /etc/mpgate
  readOnly: true
{{- if eq $e.mode "initContainer" }}
- name: mpgate-run
  mountPath: {{ $e.resultDir }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.app.env" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
{{- if eq $e.mode "entrypoint" }}
{{- include "mpgate.env" . }}
{{- else }}
- name: MPGATE_RESULT_FILE
  value: {{ printf "%s/result.json" $e.resultDir | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.app.volumeMounts" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
{{- if eq $e.mode "entrypoint" }}
{{- include "mpgate.volumeMounts" . }}
{{- else }}
- name: mpgate-run
  mountPath: {{ $e.resultDir }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.initContainer" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.mode "initContainer") }}
- name: mpgate
  image: {{ printf "%s:%s" $e.image.repository (toString $e.image.tag) | quote }}
  imagePullPolicy: {{ $e.image.pullPolicy }}
  # No arguments: init mode, exits 0 when the buyer is entitled.
  command: ["/mpgate"]
  env:
    {{- include "mpgate.env" . | trim | nindent 4 }}
  volumeMounts:
    {{- include "mpgate.volumeMounts" . | trim | nindent 4 }}
  terminationMessagePolicy: FallbackToLogsOnError
  resources:
    {{- toYaml $e.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
{{- end }}
{{- end -}}

{{/* (dict "context" $ "command" (list "/app/server" "--port" "8080")) -> JSON list */}}
{{- define "mpgate.entrypoint.command" -}}
{{- $e := include "mpgate.config" .context | fromJson -}}
{{- $command := .command | default list -}}
{{- if and $e.enabled (eq $e.mode "entrypoint") -}}
{{- if not $command -}}
{{- fail "mpgate.entrypoint.command: the workload command is empty; in entrypoint mode mpgate must be given the command to exec (set the container's command)" -}}
{{- end -}}
{{- toJson (concat (list "/mpgate" "--") $command) -}}
{{- else -}}
{{- toJson $command -}}
{{- end -}}
{{- end -}}
