{{/*
mpgate-lib: named templates for the AWS Marketplace entitlement gate (README.md beside
Chart.yaml lists every setting).

Every template takes the parent chart's root context (.) and reads
.Values.marketplace.entitlement, with .Values.global.marketplace.entitlement as the
fallback for any key the chart does not set; the exceptions take a dict, shown below.

  mpgate.enabled              "true" or "" : the gate is on
  mpgate.initContainer        the init container, as a list item (initContainer mode), or
                              the native sidecar (sidecar mode, pricing usage: _usage.tpl)
  mpgate.entrypoint.command   (dict "context" $ "command" LIST): the container command as
                              a JSON list, /mpgate -- COMMAND... in entrypoint mode, COMMAND
                              unchanged otherwise
  mpgate.env                  the mpgate process's environment (list items); in
                              initContainer mode with MPGATE_POD_UID from the downward
                              API (metadata.uid), which binds the result file to the pod
  mpgate.volumes              the key volume (configMap / existingConfigMap key sources), the
                              result emptyDir (initContainer mode) and the buyer's license
                              token secret (licenseToken.secretName), as list items
  mpgate.volumeMounts         the mounts of the container that runs mpgate (list items)
  mpgate.app.env              what the workload container adds to its env: entrypoint mode
                              and initContainer mode with hourly pricing mpgate.env (for
                              `mpgate verify --result-file "$MPGATE_RESULT_FILE" --renew`);
                              initContainer mode with contract pricing MPGATE_RESULT_FILE
  mpgate.app.volumeMounts     what the workload container mounts in the current mode (the
                              key ring and, initContainer mode, the result directory,
                              read-only)
  mpgate.podAnnotations       checksum/mpgate-keys (configMap key source), so a key change
                              rolls the pods
  mpgate.terminationGracePeriodSeconds
                              pricing contract with seat hold: grace + 10 (seconds), room
                              for mpgate to forward SIGTERM, let the workload stop and check
                              the seat in; pricing usage: grace + flushTimeout + 10, room
                              for the last partial hour's records; empty otherwise (the
                              platform's default)
  mpgate.configMap            the key ring ConfigMap (keySource configMap)
  mpgate.configMapName        the name of the key ring ConfigMap (configMap or existingConfigMap)
  mpgate.imageReference       (dict "context" $ "image" MAP "path" "image"): registry/
                              repository:tag@digest from values only; global.imageRegistry,
                              when set, replaces the registry
  mpgate.imagePullSecrets     imagePullSecrets + global.imagePullSecrets, as list items

No template holds an image default: every image comes from values.yaml. No template uses
.Release.Service, lookup or .Capabilities (the EKS add-on route does not allow them).
*/}}

{{/* The effective configuration as JSON: defaults, then global, then the chart's own
values, key by key. A key counts as set when it is present and not null, so false, 0, ""
and [] set a value (unlike mergeOverwrite). Fails on bad input. */}}
{{- define "mpgate.config" -}}
{{- $defaults := dict
      "enabled" false
      "mode" "initContainer"
      "keySource" "pinned"
      "productCode" ""
      "publicKeyVersion" ""
      "publicKeys" (dict)
      "existingConfigMap" ""
      "pricing" "hourly"
      "productSku" ""
      "entitlements" (list)
      "seat" "check"
      "grace" "30s"
      "dimensions" (list)
      "startDimension" ""
      "ledgerDir" "/var/lib/mpgate"
      "flushTimeout" "10s"
      "scrapeUrl" ""
      "scrapeInterval" ""
      "onTransientError" "deny"
      "timeout" "30s"
      "logFormat" "json"
      "extraEnv" (list)
      "resultDir" "/run/mpgate"
      "image" (dict)
      "licenseToken" (dict)
      "resources" (dict
        "requests" (dict "cpu" "10m" "memory" "16Mi")
        "limits" (dict "cpu" "200m" "memory" "64Mi")) -}}
{{- $imageKeys := splitList " " "registry repository tag digest pullPolicy" -}}
{{- $tokenKeys := list "secretName" "region" -}}
{{- $local := dict -}}
{{- with .Values.marketplace }}{{ with .entitlement }}{{ $local = . }}{{ end }}{{ end -}}
{{- $global := dict -}}
{{- with .Values.global }}{{ with .marketplace }}{{ with .entitlement }}{{ $global = . }}{{ end }}{{ end }}{{ end -}}
{{- range $where, $layer := dict "marketplace.entitlement" $local "global.marketplace.entitlement" $global -}}
{{- range $k, $_ := $layer -}}
{{- if not (hasKey $defaults $k) -}}
{{- fail (printf "%s.%s is not a setting of mpgate-lib (settings: %s)" $where $k (keys $defaults | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- with (get $layer "image") -}}
{{- range $k, $_ := . -}}
{{- if not (has $k $imageKeys) -}}
{{- fail (printf "%s.image.%s is not an image setting (settings: %s)" $where $k (join ", " $imageKeys)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with (get $layer "licenseToken") -}}
{{- if not (kindIs "map" .) -}}
{{- fail (printf "%s.licenseToken must be a map (secretName, region)" $where) -}}
{{- end -}}
{{- range $k, $_ := . -}}
{{- if not (has $k $tokenKeys) -}}
{{- fail (printf "%s.licenseToken.%s is not a license token setting (settings: %s)" $where $k (join ", " $tokenKeys)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $e := dict -}}
{{- range $k, $d := $defaults -}}
{{- $v := $d -}}
{{- if and (hasKey $global $k) (not (kindIs "invalid" (get $global $k))) -}}{{- $v = get $global $k -}}{{- end -}}
{{- if and (hasKey $local $k) (not (kindIs "invalid" (get $local $k))) -}}{{- $v = get $local $k -}}{{- end -}}
{{- $_ := set $e $k $v -}}
{{- end -}}
{{- /* The gate image, field by field: a chart may set only its tag over a global image. */ -}}
{{- $image := dict "registry" "" "repository" "" "tag" "" "digest" "" "pullPolicy" "IfNotPresent" -}}
{{- range $layer := list (get $global "image") (get $local "image") -}}
{{- if kindIs "map" $layer -}}
{{- range $k := $imageKeys -}}
{{- if and (hasKey $layer $k) (not (kindIs "invalid" (get $layer $k))) -}}{{- $_ := set $image $k (get $layer $k) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $e "image" $image -}}
{{- /* The buyer's license token, field by field like the image. */ -}}
{{- $token := dict "secretName" "" "region" "" -}}
{{- range $layer := list (get $global "licenseToken") (get $local "licenseToken") -}}
{{- if kindIs "map" $layer -}}
{{- range $k := $tokenKeys -}}
{{- if and (hasKey $layer $k) (not (kindIs "invalid" (get $layer $k))) -}}{{- $_ := set $token $k (toString (get $layer $k) | trim) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $e "licenseToken" $token -}}
{{- if $e.enabled -}}
{{- if not (has (toString $e.mode) (list "initContainer" "entrypoint" "sidecar")) -}}
{{- fail (printf "marketplace.entitlement.mode must be \"initContainer\", \"entrypoint\" or \"sidecar\" (pricing usage), not %q" (toString $e.mode)) -}}
{{- end -}}
{{- if not (has (toString $e.keySource) (list "configMap" "existingConfigMap" "image" "pinned")) -}}
{{- fail (printf "marketplace.entitlement.keySource must be \"configMap\", \"existingConfigMap\", \"image\" or \"pinned\", not %q" (toString $e.keySource)) -}}
{{- end -}}
{{- if not (has (toString $e.onTransientError) (list "deny" "allow")) -}}
{{- fail (printf "marketplace.entitlement.onTransientError must be \"deny\" or \"allow\", not %q" (toString $e.onTransientError)) -}}
{{- end -}}
{{- if not (has (toString $e.pricing) (list "hourly" "contract" "usage")) -}}
{{- fail (printf "marketplace.entitlement.pricing must be \"hourly\" (RegisterUsage), \"contract\" (AWS License Manager) or \"usage\" (MeterUsage, custom metering dimensions), not %q" (toString $e.pricing)) -}}
{{- end -}}
{{- if not (has (toString $e.seat) (list "check" "hold")) -}}
{{- fail (printf "marketplace.entitlement.seat must be \"check\" or \"hold\", not %q" (toString $e.seat)) -}}
{{- end -}}
{{- /* Usage pricing's settings and refusals: _usage.tpl. */ -}}
{{- include "mpgate.usage.check" $e -}}
{{- /* Formats are checked here, not by values.schema.json, so a seller reads a sentence
instead of a regular expression. */ -}}
{{- $duration := "^[0-9]+(ms|s|m|h)?$" -}}
{{- range $k := list "timeout" "grace" -}}
{{- if not (regexMatch $duration (toString (get $e $k))) -}}
{{- fail (printf "marketplace.entitlement.%s must be a duration: a whole number with an optional unit ms, s, m or h (30, 30s, 1500ms, 2m), not %q" $k (toString (get $e $k))) -}}
{{- end -}}
{{- end -}}
{{- if not (hasPrefix "/" (toString $e.resultDir)) -}}
{{- fail (printf "marketplace.entitlement.resultDir must be an absolute directory (the default is /run/mpgate), not %q" (toString $e.resultDir)) -}}
{{- end -}}
{{- /* Each pricing model's settings, refused under the other one: a setting the gate would
ignore is a mistake the seller should see at render time, not in production. */ -}}
{{- $version := toString $e.publicKeyVersion -}}
{{- if eq $e.pricing "hourly" -}}
{{- $contractSet := list -}}
{{- if toString $e.productSku | trim }}{{ $contractSet = append $contractSet "marketplace.entitlement.productSku" }}{{ end -}}
{{- if $e.entitlements }}{{ $contractSet = append $contractSet "marketplace.entitlement.entitlements" }}{{ end -}}
{{- if ne (toString $e.seat) "check" }}{{ $contractSet = append $contractSet "marketplace.entitlement.seat" }}{{ end -}}
{{- if ne (toString $e.grace) "30s" }}{{ $contractSet = append $contractSet "marketplace.entitlement.grace" }}{{ end -}}
{{- if or $token.secretName $token.region }}{{ $contractSet = append $contractSet "marketplace.entitlement.licenseToken" }}{{ end -}}
{{- with $contractSet -}}
{{- $one := eq (len .) 1 -}}
{{- fail (printf "%s %s pricing contract (AWS License Manager), but pricing is hourly (RegisterUsage), which would ignore %s: remove %s, or set marketplace.entitlement.pricing to contract" (join ", " .) (ternary "is a setting of" "are settings of" $one) (ternary "it" "them" $one) (ternary "it" "them" $one)) -}}
{{- end -}}
{{- else if eq $e.pricing "contract" -}}
{{- $hourlySet := list -}}
{{- if toString $e.productCode | trim }}{{ $hourlySet = append $hourlySet "marketplace.entitlement.productCode" }}{{ end -}}
{{- if $version }}{{ $hourlySet = append $hourlySet "marketplace.entitlement.publicKeyVersion" }}{{ end -}}
{{- $pems := list -}}
{{- range $_, $pem := ($e.publicKeys | default dict) }}{{ if $pem }}{{ $pems = append $pems $pem }}{{ end }}{{ end -}}
{{- if $pems }}{{ $hourlySet = append $hourlySet "marketplace.entitlement.publicKeys" }}{{ end -}}
{{- if $e.existingConfigMap }}{{ $hourlySet = append $hourlySet "marketplace.entitlement.existingConfigMap" }}{{ end -}}
{{- with $hourlySet -}}
{{- $one := eq (len .) 1 -}}
{{- fail (printf "%s %s pricing hourly (RegisterUsage), but pricing is contract, which checks out the AWS License Manager license of productSku and uses no product code or public key: remove %s, or set marketplace.entitlement.pricing to hourly" (join ", " .) (ternary "is a setting of" "are settings of" $one) (ternary "it" "them" $one)) -}}
{{- end -}}
{{- end -}}
{{- /* A pinned build refuses allow (exit 2): whoever can break the network path would
start the workload unverified. Refused here, at render time, not in the buyer's pod. */ -}}
{{- if and (eq $e.pricing "hourly") (eq $e.keySource "pinned") (eq $e.onTransientError "allow") -}}
{{- fail "marketplace.entitlement.onTransientError allow is refused by a pinned mpgate build (keySource pinned, exit 2): it would start the workload unverified whenever the network path to AWS is broken; keep deny" -}}
{{- end -}}
{{- if eq $e.pricing "contract" -}}
{{- $sku := toString $e.productSku | trim -}}
{{- if not $sku -}}
{{- fail "marketplace.entitlement.productSku is required with pricing contract: the product ID shown on your product's page in the AWS Marketplace Management Portal" -}}
{{- end -}}
{{- if not (regexMatch "^[^\\s,]{1,255}$" $sku) -}}
{{- fail (printf "marketplace.entitlement.productSku %q is not a product ID: copy it from your product's page in the AWS Marketplace Management Portal (no spaces or commas, at most 255 characters)" $sku) -}}
{{- end -}}
{{- if not (kindIs "slice" $e.entitlements) -}}
{{- fail "marketplace.entitlement.entitlements must be a list of NAME, NAME=VALUE or NAME=VALUE:UNIT strings" -}}
{{- end -}}
{{- if not $e.entitlements -}}
{{- fail "marketplace.entitlement.entitlements is empty: with pricing contract, list at least one entitlement the license must include (NAME, NAME=VALUE or NAME=VALUE:UNIT)" -}}
{{- end -}}
{{- $units := splitList " " "Count Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes Terabytes Bits Kilobits Megabits Gigabits Terabits Percent Bytes/Second Kilobytes/Second Megabytes/Second Gigabytes/Second Terabytes/Second Bits/Second Kilobits/Second Megabits/Second Gigabits/Second Terabits/Second Count/Second" -}}
{{- range $e.entitlements -}}
{{- $spec := toString . -}}
{{- if not (regexMatch "^[^,=:\\s]+(=0*[1-9][0-9]*(:[^,=:\\s]+)?)?$" $spec) -}}
{{- fail (printf "marketplace.entitlement.entitlements: %q is not NAME, NAME=VALUE or NAME=VALUE:UNIT (no commas, colons or spaces in NAME; VALUE a whole number >= 1; a feature is NAME alone)" $spec) -}}
{{- end -}}
{{- $unit := regexFind ":[^:]+$" $spec | trimPrefix ":" -}}
{{- if and $unit (not (has $unit $units)) -}}
{{- fail (printf "marketplace.entitlement.entitlements: %q has the unit %q, which is not an AWS License Manager unit (%s; a feature takes no value: NAME alone)" $spec $unit (join ", " $units)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $e.seat "hold") (eq $e.mode "initContainer") -}}
{{- fail "marketplace.entitlement.seat hold works only with mode entrypoint: mpgate must stay the workload's parent to keep the seat; an init container exits before the workload starts (use seat check, or mode entrypoint)" -}}
{{- end -}}
{{- if and (ne (toString $e.seat) "hold") (ne (toString $e.grace) "30s") -}}
{{- fail "marketplace.entitlement.grace applies to seat hold only (how long the workload gets to stop when the license is lost): remove it, or set marketplace.entitlement.seat to hold (mode entrypoint)" -}}
{{- end -}}
{{- /* Containers Anywhere: the buyer's license token secret, exchanged for the role the
buyer created with it; no IRSA outside AWS. */ -}}
{{- if $token.secretName -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" $token.secretName) -}}
{{- fail (printf "marketplace.entitlement.licenseToken.secretName %q is not a Secret name (lowercase letters, digits, '-' and '.'): the name the buyer saved the license token under, e.g. awsmp-license-token-secret" $token.secretName) -}}
{{- end -}}
{{- if not $token.region -}}
{{- fail "marketplace.entitlement.licenseToken.region is required with licenseToken.secretName: the license's home region, where the buyer created the token (mpgate assumes none, and nothing sets one outside AWS)" -}}
{{- end -}}
{{- if not (regexMatch "^[a-z]{2}(-[a-z]+)+-[0-9]+$" $token.region) -}}
{{- fail (printf "marketplace.entitlement.licenseToken.region %q is not a region name: the license's home region, where the buyer created the token" $token.region) -}}
{{- end -}}
{{- $irsa := "" -}}
{{- with $.Values.serviceAccount }}{{ with .annotations }}{{ $irsa = get . "eks.amazonaws.com/role-arn" | default "" | toString }}{{ end }}{{ end -}}
{{- range $e.extraEnv }}{{ if and (kindIs "map" .) (has (toString .name) (list "AWS_ROLE_ARN" "AWS_WEB_IDENTITY_TOKEN_FILE")) }}{{ $irsa = toString .name }}{{ end }}{{ end -}}
{{- if $irsa -}}
{{- fail "marketplace.entitlement.licenseToken and IRSA (serviceAccount.annotations eks.amazonaws.com/role-arn, or AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE in extraEnv) are exclusive: a license token is for clusters outside AWS (EKS Anywhere, self-managed Kubernetes), where mpgate exchanges it for the role the buyer created with it, and IRSA is for EKS; remove one" -}}
{{- end -}}
{{- else if $token.region -}}
{{- fail "marketplace.entitlement.licenseToken.region applies with licenseToken.secretName only (the license's home region for the buyer's token): remove it, or set licenseToken.secretName" -}}
{{- end -}}
{{- else -}}
{{- $code := toString $e.productCode | trim -}}
{{- if and $code (not (regexMatch "^\\S{1,255}$" $code)) -}}
{{- fail (printf "marketplace.entitlement.productCode %q is not a product code: copy it from your product's page in the AWS Marketplace Management Portal (no spaces, at most 255 characters)" $code) -}}
{{- end -}}
{{- if and $version (not (regexMatch "^[1-9][0-9]*$" $version)) -}}
{{- fail (printf "marketplace.entitlement.publicKeyVersion must be an integer >= 1 (or unset: the highest version the keys cover), not %q" $version) -}}
{{- end -}}
{{- if and (has $e.keySource (list "configMap" "existingConfigMap")) (not $code) -}}
{{- fail (printf "marketplace.entitlement.productCode is required with keySource %s: set it to the product code shown on your product's page in the AWS Marketplace Management Portal (with keySource image or pinned, the image's own product code is used instead)" $e.keySource) -}}
{{- end -}}
{{- if eq $e.keySource "configMap" -}}
{{- if not $e.publicKeys -}}
{{- fail "marketplace.entitlement.publicKeys is empty: with keySource configMap, map each public key version to its PEM from the AWS Marketplace Management Portal (publicKeys: {\"1\": \"-----BEGIN PUBLIC KEY-----...\"}, or --set-file marketplace.entitlement.publicKeys.1=public-key-v1.pem)" -}}
{{- end -}}
{{- range $v, $pem := $e.publicKeys -}}
{{- if not (regexMatch "^[1-9][0-9]*$" (toString $v)) -}}
{{- fail (printf "marketplace.entitlement.publicKeys: %q is not a key version (an integer >= 1)" (toString $v)) -}}
{{- end -}}
{{- if or (not (regexMatch "-----BEGIN (RSA )?PUBLIC KEY-----" (toString $pem))) (contains "PRIVATE KEY" (toString $pem)) -}}
{{- fail (printf "marketplace.entitlement.publicKeys.%s is not a PEM public key (-----BEGIN PUBLIC KEY-----...); never put a private key in values" (toString $v)) -}}
{{- end -}}
{{- end -}}
{{- if and $version (not (hasKey $e.publicKeys $version)) -}}
{{- fail (printf "marketplace.entitlement.publicKeyVersion %s is not in publicKeys (%s)" $version (keys $e.publicKeys | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $e.keySource "existingConfigMap") (not $e.existingConfigMap) -}}
{{- fail "marketplace.entitlement.existingConfigMap is required with keySource existingConfigMap: the name of a ConfigMap in the release namespace holding public-key-v<N>.pem files" -}}
{{- end -}}
{{- end -}}
{{- if eq $e.mode "initContainer" -}}
{{- if not $image.repository -}}
{{- fail "marketplace.entitlement.image.repository is required in initContainer mode: the mpgate image, pushed to your product's AWS Marketplace ECR repositories (no template holds an image default)" -}}
{{- end -}}
{{- if not (or $image.tag $image.digest) -}}
{{- fail "marketplace.entitlement.image.tag or marketplace.entitlement.image.digest is required in initContainer mode (no template holds an image default)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $e -}}
{{- end -}}

{{- define "mpgate.enabled" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled -}}true{{- end -}}
{{- end -}}

{{/* <release>-<chart>, at most 50 characters (a hash keeps long names apart): names
the library creates are scoped by chart, so two subcharts of one release never clash. */}}
{{- define "mpgate.scope" -}}
{{- $base := printf "%s-%s" .Release.Name .Chart.Name -}}
{{- if gt (len $base) 50 -}}
{{- printf "%s-%s" ($base | trunc 41 | trimSuffix "-") (sha256sum $base | trunc 8) -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{- define "mpgate.configMapName" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if eq $e.keySource "existingConfigMap" -}}
{{- $e.existingConfigMap -}}
{{- else -}}
{{- printf "%s-mpgate-keys" (include "mpgate.scope" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the buyer's license token secret is mounted (AWS's seller guide's path). */}}
{{- define "mpgate.licenseTokenDir" -}}/var/run/secrets/product-license{{- end -}}

{{/* Key ring settings: the directory and whether this key source mounts one. */}}
{{- define "mpgate.keyDir" -}}/etc/mpgate/keys{{- end -}}
{{- define "mpgate.mountsKeys" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "hourly") (has $e.keySource (list "configMap" "existingConfigMap")) -}}true{{- end -}}
{{- end -}}

{{- define "mpgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mpgate
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "mpgate.configMap" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "hourly") (eq $e.keySource "configMap") }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "mpgate.configMapName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "mpgate.labels" . | nindent 4 }}
data:
  {{- range $v, $pem := $e.publicKeys }}
  public-key-v{{ $v }}.pem: |
    {{- $pem | toString | trim | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.podAnnotations" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "hourly") (eq $e.keySource "configMap") }}
checksum/mpgate-keys: {{ $e.publicKeys | toJson | sha256sum }}
{{- end }}
{{- end -}}

{{- define "mpgate.env" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
{{- if eq $e.pricing "contract" }}
{{- /* AWS License Manager: no product code, no public key. */}}
- name: MPGATE_PRICING
  value: "contract"
- name: MPGATE_PRODUCT_SKU
  value: {{ toString $e.productSku | trim | quote }}
- name: MPGATE_ENTITLEMENTS
  value: {{ join "," $e.entitlements | quote }}
- name: MPGATE_SEAT
  value: {{ $e.seat | quote }}
{{- if eq $e.seat "hold" }}
- name: MPGATE_GRACE
  value: {{ toString $e.grace | quote }}
{{- end }}
{{- with $e.licenseToken.secretName }}
{{- /* The role comes from iam_role beside the token (the buyer's secret holds both). */}}
- name: MPGATE_LICENSE_TOKEN_FILE
  value: {{ printf "%s/license_token" (include "mpgate.licenseTokenDir" $) | quote }}
- name: MPGATE_LICENSE_REGION
  value: {{ $e.licenseToken.region | quote }}
{{- end }}
{{- else }}
{{- with toString $e.productCode | trim }}
- name: MPGATE_PRODUCT_CODE
  value: {{ . | quote }}
{{- end }}
{{- with toString $e.publicKeyVersion }}
- name: MPGATE_PUBLIC_KEY_VERSION
  value: {{ . | quote }}
{{- end }}
{{- if include "mpgate.mountsKeys" . }}
- name: MPGATE_PUBLIC_KEY_DIR
  value: {{ include "mpgate.keyDir" . | quote }}
{{- end }}
{{- end }}
{{- include "mpgate.usage.env" . }}
- name: MPGATE_TIMEOUT
  value: {{ $e.timeout | toString | quote }}
- name: MPGATE_ON_TRANSIENT_ERROR
  value: {{ $e.onTransientError | quote }}
- name: MPGATE_LOG_FORMAT
  value: {{ $e.logFormat | quote }}
{{- if eq $e.mode "initContainer" }}
- name: MPGATE_RESULT_FILE
  value: {{ printf "%s/result.json" $e.resultDir | quote }}
{{- /* The pod's UID: the result file records it (hourly pricing), and mpgate verify
accepts the file only where MPGATE_POD_UID has the same value. */}}
- name: MPGATE_POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- end }}
{{- with $e.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Seconds for the pod's terminationGracePeriodSeconds with pricing contract and seat
hold: grace (rounded up to whole seconds) + 10, so mpgate can forward SIGTERM, let the
workload stop within its grace and check the seat in before the kubelet's SIGKILL. Empty
otherwise (keep the platform's default). */}}
{{- define "mpgate.terminationGracePeriodSeconds" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "contract") (eq $e.seat "hold") -}}
{{- $g := toString $e.grace -}}
{{- $n := regexReplaceAll "[^0-9]" $g "" | atoi -}}
{{- $unit := regexReplaceAll "^[0-9]+" $g "" -}}
{{- $seconds := $n -}}
{{- if eq $unit "ms" }}{{ $seconds = div (add $n 999) 1000 }}{{ end -}}
{{- if eq $unit "m" }}{{ $seconds = mul $n 60 }}{{ end -}}
{{- if eq $unit "h" }}{{ $seconds = mul $n 3600 }}{{ end -}}
{{- add $seconds 10 -}}
{{- else -}}
{{- include "mpgate.usage.terminationGracePeriodSeconds" . -}}
{{- end -}}
{{- end -}}

{{- define "mpgate.volumes" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
{{- include "mpgate.usage.volumes" . }}
{{- if include "mpgate.mountsKeys" . }}
- name: mpgate-keys
  configMap:
    name: {{ include "mpgate.configMapName" . }}
{{- end }}
{{- if eq $e.mode "initContainer" }}
- name: mpgate-run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- with $e.licenseToken.secretName }}
- name: mpgate-license-token
  secret:
    secretName: {{ . | quote }}
    # The pod does not start without the buyer's token: no silent fallback.
    optional: false
    # Read by the pod's group (fsGroup), never written.
    defaultMode: 0440
    items:
      - key: license_token
        path: license_token
      - key: iam_role
        path: iam_role
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.volumeMounts" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
{{- include "mpgate.usage.volumeMounts" . }}
{{- if include "mpgate.mountsKeys" . }}
- name: mpgate-keys
  mountPath: {{ include "mpgate.keyDir" . }}
  readOnly: true
{{- end }}
{{- if eq $e.mode "initContainer" }}
- name: mpgate-run
  mountPath: {{ $e.resultDir }}
{{- end }}
{{- if $e.licenseToken.secretName }}
- name: mpgate-license-token
  mountPath: {{ include "mpgate.licenseTokenDir" . }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* The workload container. Entrypoint mode: it runs mpgate, so it gets everything.
initContainer mode, hourly pricing: what `mpgate verify --result-file "$MPGATE_RESULT_FILE"
--renew` needs at the workload's own start (product code, key, result file, and the gate's
settings for a renewal's RegisterUsage call), so a restarted app container re-checks instead
of trusting a stale file. Contract pricing: the result file only (verify does not apply). */}}
{{- define "mpgate.app.env" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if $e.enabled }}
{{- if eq $e.mode "sidecar" }}
{{- include "mpgate.usage.app.env" . }}
{{- else if or (eq $e.mode "entrypoint") (eq $e.pricing "hourly") }}
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
{{- else if eq $e.mode "sidecar" }}
{{- include "mpgate.usage.app.volumeMounts" . }}
{{- else }}
{{- if include "mpgate.mountsKeys" . }}
- name: mpgate-keys
  mountPath: {{ include "mpgate.keyDir" . }}
  readOnly: true
{{- end }}
- name: mpgate-run
  mountPath: {{ $e.resultDir }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* (dict "context" $ "image" .Values.image "path" "image") -> "registry/repository:tag@digest" */}}
{{- define "mpgate.imageReference" -}}
{{- $img := .image | default dict -}}
{{- $path := .path | default "image" -}}
{{- $registry := toString ($img.registry | default "") -}}
{{- with .context.Values.global }}{{ with .imageRegistry }}{{ $registry = toString . }}{{ end }}{{ end -}}
{{- $repository := toString ($img.repository | default "") -}}
{{- $tag := toString ($img.tag | default "") -}}
{{- $digest := toString ($img.digest | default "") -}}
{{- if not $repository -}}
{{- fail (printf "%s.repository is required (no template holds an image default)" $path) -}}
{{- end -}}
{{- if not (or $tag $digest) -}}
{{- fail (printf "%s.tag or %s.digest is required (no template holds an image default)" $path $path) -}}
{{- end -}}
{{- if and $digest (not (regexMatch "^sha256:[0-9a-f]{64}$" $digest)) -}}
{{- fail (printf "%s.digest must be sha256: followed by 64 lowercase hex digits (the Digest that docker buildx imagetools inspect prints), not %q; leave it empty to pull by tag" $path $digest) -}}
{{- end -}}
{{- $ref := $repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" (trimSuffix "/" $registry) $repository }}{{ end -}}
{{- if $tag }}{{ $ref = printf "%s:%s" $ref $tag }}{{ end -}}
{{- if $digest }}{{ $ref = printf "%s@%s" $ref $digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{- define "mpgate.imagePullSecrets" -}}
{{- $secrets := list -}}
{{- with .Values.global }}{{ with .imagePullSecrets }}{{ $secrets = concat $secrets . }}{{ end }}{{ end -}}
{{- with .Values.imagePullSecrets }}{{ $secrets = concat $secrets . }}{{ end -}}
{{- $names := list -}}
{{- range $secrets -}}
{{- if kindIs "map" . }}{{ $names = append $names (toString .name) }}{{ else }}{{ $names = append $names (toString .) }}{{ end -}}
{{- end -}}
{{- range $names | uniq }}
- name: {{ . }}
{{- end }}
{{- end -}}

{{- define "mpgate.initContainer" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.mode "initContainer") }}
- name: mpgate
  image: {{ include "mpgate.imageReference" (dict "context" . "image" $e.image "path" "marketplace.entitlement.image") | quote }}
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
{{- include "mpgate.usage.sidecar" . }}
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
