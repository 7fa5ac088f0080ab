{{/*
mpgate-lib, usage pricing (custom metering: MeterUsage). mpgate makes one MeterUsage call
of quantity 0 before the workload starts (the entitlement check), then stays up as the
metering agent: the workload reports usage on a Unix socket, mpgate keeps it in a ledger on
a volume until AWS has recorded it, and sends one record per dimension per hour.

  mpgate.usage.check          (the merged configuration): fails the render with a sentence
                              on a usage setting under another pricing model, another
                              model's setting under usage, or a bad dimension; called by
                              mpgate.config
  mpgate.usage.env            the agent's variables (mpgate.env adds them)
  mpgate.usage.volumes        the ledger emptyDir (mpgate.volumes adds it)
  mpgate.usage.volumeMounts   the ledger, writable, in the container that runs mpgate
  mpgate.usage.app.env        sidecar mode: MPGATE_USAGE_SOCKET for the workload container
  mpgate.usage.app.volumeMounts
                              sidecar mode: the ledger volume, read-only, in the workload
                              container (connecting to a socket needs no write access to
                              its file system)
  mpgate.usage.sidecar        sidecar mode: the native sidecar (an init container with
                              restartPolicy Always; mpgate.initContainer adds it)
  mpgate.usage.terminationGracePeriodSeconds
                              grace + flushTimeout + 10 s
  mpgate.seconds              a duration (30, 30s, 1500ms, 2m, 1h) in whole seconds, rounded up
*/}}

{{- define "mpgate.seconds" -}}
{{- $d := toString . -}}
{{- $n := regexReplaceAll "[^0-9]" $d "" | atoi -}}
{{- $unit := regexReplaceAll "^[0-9]+" $d "" -}}
{{- $seconds := $n -}}
{{- if eq $unit "ms" }}{{ $seconds = div (add $n 999) 1000 }}{{ end -}}
{{- if eq $unit "m" }}{{ $seconds = mul $n 60 }}{{ end -}}
{{- if eq $unit "h" }}{{ $seconds = mul $n 3600 }}{{ end -}}
{{- $seconds -}}
{{- end -}}

{{/* The socket the agent listens on: its default, usage.sock in the ledger directory. */}}
{{- define "mpgate.usage.socket" -}}
{{- printf "%s/usage.sock" (trimSuffix "/" (toString .ledgerDir)) -}}
{{- end -}}

{{- define "mpgate.usage.check" -}}
{{- $e := . -}}
{{- $defaultLedger := "/var/lib/mpgate" -}}
{{- if ne $e.pricing "usage" -}}
{{- /* Usage settings under another model: never silently dropped. */ -}}
{{- $usageSet := list -}}
{{- if $e.dimensions }}{{ $usageSet = append $usageSet "marketplace.entitlement.dimensions" }}{{ end -}}
{{- if toString $e.startDimension | trim }}{{ $usageSet = append $usageSet "marketplace.entitlement.startDimension" }}{{ end -}}
{{- if ne (toString $e.ledgerDir) $defaultLedger }}{{ $usageSet = append $usageSet "marketplace.entitlement.ledgerDir" }}{{ end -}}
{{- if ne (toString $e.flushTimeout) "10s" }}{{ $usageSet = append $usageSet "marketplace.entitlement.flushTimeout" }}{{ end -}}
{{- if $e.scrapeUrl }}{{ $usageSet = append $usageSet "marketplace.entitlement.scrapeUrl" }}{{ end -}}
{{- if $e.scrapeInterval }}{{ $usageSet = append $usageSet "marketplace.entitlement.scrapeInterval" }}{{ end -}}
{{- $model := ternary "hourly (RegisterUsage)" "contract (AWS License Manager)" (eq $e.pricing "hourly") -}}
{{- with $usageSet -}}
{{- $one := eq (len .) 1 -}}
{{- fail (printf "%s %s pricing usage (MeterUsage, custom metering dimensions), but pricing is %s, which would ignore %s: remove %s, or set marketplace.entitlement.pricing to usage" (join ", " .) (ternary "is a setting of" "are settings of" $one) $model (ternary "it" "them" $one) (ternary "it" "them" $one)) -}}
{{- end -}}
{{- if eq $e.mode "sidecar" -}}
{{- fail (printf "marketplace.entitlement.mode sidecar runs mpgate's metering agent beside the workload, which only pricing usage has; pricing %s checks once before the workload starts: use mode initContainer or entrypoint, or set marketplace.entitlement.pricing to usage" $model) -}}
{{- end -}}
{{- else -}}
{{- /* The other models' settings under usage. */ -}}
{{- $contractSet := list -}}
{{- if toString $e.productSku | trim }}{{ $contractSet = append $contractSet "marketplace.entitlement.productSku" }}{{ end -}}
{{- if $e.entitlements }}{{ $contractSet = append $contractSet "marketplace.entitlement.entitlements" }}{{ end -}}
{{- if ne (toString $e.seat) "check" }}{{ $contractSet = append $contractSet "marketplace.entitlement.seat" }}{{ end -}}
{{- /* The license token (Containers Anywhere, contract pricing): MeterUsage is not offered
outside AWS. dig: the setting may be absent from the merged configuration. */ -}}
{{- if or (dig "licenseToken" "secretName" "" $e) (dig "licenseToken" "region" "" $e) }}{{ $contractSet = append $contractSet "marketplace.entitlement.licenseToken" }}{{ end -}}
{{- with $contractSet -}}
{{- $one := eq (len .) 1 -}}
{{- fail (printf "%s %s pricing contract (AWS License Manager), but pricing is usage (MeterUsage), which would ignore %s: remove %s, or set marketplace.entitlement.pricing to contract" (join ", " .) (ternary "is a setting of" "are settings of" $one) (ternary "it" "them" $one) (ternary "it" "them" $one)) -}}
{{- end -}}
{{- $keySet := list -}}
{{- if toString $e.publicKeyVersion }}{{ $keySet = append $keySet "marketplace.entitlement.publicKeyVersion" }}{{ end -}}
{{- $pems := list -}}
{{- range $_, $pem := ($e.publicKeys | default dict) }}{{ if $pem }}{{ $pems = append $pems $pem }}{{ end }}{{ end -}}
{{- if $pems }}{{ $keySet = append $keySet "marketplace.entitlement.publicKeys" }}{{ end -}}
{{- if $e.existingConfigMap }}{{ $keySet = append $keySet "marketplace.entitlement.existingConfigMap" }}{{ end -}}
{{- if has $e.keySource (list "configMap" "existingConfigMap") }}{{ $keySet = append $keySet (printf "marketplace.entitlement.keySource %s" $e.keySource) }}{{ end -}}
{{- with $keySet -}}
{{- $one := eq (len .) 1 -}}
{{- fail (printf "%s %s pricing hourly (the public key of RegisterUsage's signed token), but pricing is usage: MeterUsage answers with no token, so mpgate uses no key: remove %s (keySource pinned, or image), or set marketplace.entitlement.pricing to hourly" (join ", " .) (ternary "is a setting of" "are settings of" $one) (ternary "it" "them" $one)) -}}
{{- end -}}
{{- if eq $e.mode "initContainer" -}}
{{- fail "marketplace.entitlement.mode initContainer does not work with pricing usage: the metering agent must run as long as the workload, and an init container exits before it starts; use mode entrypoint (/mpgate -- COMMAND in the workload container) or sidecar (an mpgate container beside it)" -}}
{{- end -}}
{{- if and (eq $e.keySource "pinned") (eq $e.onTransientError "allow") -}}
{{- fail "marketplace.entitlement.onTransientError allow is refused by a pinned mpgate build (keySource pinned, exit 2): it would start the workload unverified whenever the network path to AWS is broken; keep deny" -}}
{{- end -}}
{{- /* Dimensions: as src/config/usage.rs reads MPGATE_DIMENSIONS, each with a sentence. */ -}}
{{- if not (kindIs "slice" $e.dimensions) -}}
{{- fail "marketplace.entitlement.dimensions must be a list of dimension API names (the names of your product's pricing dimensions in the AWS Marketplace Management Portal)" -}}
{{- end -}}
{{- if not $e.dimensions -}}
{{- fail "marketplace.entitlement.dimensions is empty: with pricing usage, list your product's pricing dimensions by API name (your product's pricing in the AWS Marketplace Management Portal), 1 to 24" -}}
{{- end -}}
{{- if gt (len $e.dimensions) 24 -}}
{{- fail (printf "marketplace.entitlement.dimensions lists %d dimensions: a product has at most 24" (len $e.dimensions)) -}}
{{- end -}}
{{- $seen := list -}}
{{- $scraped := 0 -}}
{{- range $e.dimensions -}}
{{- /* NAME, or NAME=METRIC[{label="v"}]:counter|max|avg[*FACTOR]: read from scrapeUrl. */ -}}
{{- $parts := regexSplit "=" (toString .) 2 -}}
{{- $d := index $parts 0 -}}
{{- if gt (len $parts) 1 -}}
{{- if not (regexMatch "^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{.*\\})?:(counter|max|avg)(\\*[0-9.eE+-]+)?$" (index $parts 1)) -}}
{{- fail (printf "marketplace.entitlement.dimensions: %q reads no metric mpgate understands: write NAME=METRIC[{label=\"value\"}]:counter|max|avg[*FACTOR], e.g. nodes=active_nodes:max" (toString .)) -}}
{{- end -}}
{{- $scraped = add1 $scraped -}}
{{- end -}}
{{- if not (regexMatch "^[^\\s,=[:cntrl:]]{1,255}$" $d) -}}
{{- fail (printf "marketplace.entitlement.dimensions: %q is not a dimension API name (1 to 255 characters, no spaces, commas, '=' or control characters): copy it from your product's pricing in the AWS Marketplace Management Portal" $d) -}}
{{- end -}}
{{- if has $d $seen -}}
{{- fail (printf "marketplace.entitlement.dimensions names %q twice" $d) -}}
{{- end -}}
{{- $seen = append $seen $d -}}
{{- end -}}
{{- with toString $e.startDimension | trim -}}
{{- if not (has . $seen) -}}
{{- fail (printf "marketplace.entitlement.startDimension %q is not one of marketplace.entitlement.dimensions (%s): the start's MeterUsage of quantity 0 goes to one of them" . (join ", " $seen)) -}}
{{- end -}}
{{- end -}}
{{- with toString $e.scrapeUrl | trim -}}
{{- if not $scraped -}}
{{- fail "marketplace.entitlement.scrapeUrl is set, and no dimension names a metric: write the dimension as NAME=METRIC:counter|max|avg in marketplace.entitlement.dimensions, or unset scrapeUrl" -}}
{{- end -}}
{{- if not (regexMatch "^http://(127\\.[0-9]+\\.[0-9]+\\.[0-9]+|localhost|\\[::1\\]):[0-9]{1,5}(/[^\\s#]*)?$" .) -}}
{{- fail (printf "marketplace.entitlement.scrapeUrl %q must be http:// on loopback with a port, e.g. http://127.0.0.1:9100/metrics: the workload's metrics, in the pod" .) -}}
{{- end -}}
{{- if eq $e.keySource "pinned" -}}
{{- fail "marketplace.entitlement.scrapeUrl is refused by a pinned mpgate build (keySource pinned, exit 2): a buyer could point it at metrics of their own; a pinned build meters what the workload pushes" -}}
{{- end -}}
{{- else -}}
{{- if $scraped -}}
{{- fail "marketplace.entitlement.dimensions names a metric, and scrapeUrl is empty: set marketplace.entitlement.scrapeUrl to the workload's Prometheus metrics on loopback, e.g. http://127.0.0.1:9100/metrics" -}}
{{- end -}}
{{- end -}}
{{- with toString $e.scrapeInterval | trim -}}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h)?$" .) -}}
{{- fail (printf "marketplace.entitlement.scrapeInterval must be a duration (15s, 500ms, 1m), not %q" .) -}}
{{- end -}}
{{- end -}}
{{- if not (hasPrefix "/" (toString $e.ledgerDir)) -}}
{{- fail (printf "marketplace.entitlement.ledgerDir must be an absolute directory (the default is %s), not %q" $defaultLedger (toString $e.ledgerDir)) -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h)?$" (toString $e.flushTimeout)) -}}
{{- fail (printf "marketplace.entitlement.flushTimeout must be a duration: a whole number with an optional unit ms, s, m or h (30, 30s, 1500ms, 2m), not %q" (toString $e.flushTimeout)) -}}
{{- end -}}
{{- if eq $e.mode "sidecar" -}}
{{- if not $e.image.repository -}}
{{- fail "marketplace.entitlement.image.repository is required in sidecar mode: the mpgate image, pushed to your product's AWS Marketplace ECR repositories (no template holds an image default)" -}}
{{- end -}}
{{- if not (or $e.image.tag $e.image.digest) -}}
{{- fail "marketplace.entitlement.image.tag or marketplace.entitlement.image.digest is required in sidecar mode (no template holds an image default)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mpgate.usage.env" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") }}
- name: MPGATE_PRICING
  value: "usage"
- name: MPGATE_DIMENSIONS
  value: {{ join "," $e.dimensions | quote }}
{{- with toString $e.startDimension | trim }}
- name: MPGATE_START_DIMENSION
  value: {{ . | quote }}
{{- end }}
{{- /* The ledger: acknowledged usage survives a crash or an OOM kill of the container
(an emptyDir lives as long as the pod). */}}
- name: MPGATE_LEDGER_DIR
  value: {{ $e.ledgerDir | quote }}
- name: MPGATE_FLUSH_TIMEOUT
  value: {{ toString $e.flushTimeout | quote }}
{{- with toString $e.scrapeUrl | trim }}
- name: MPGATE_SCRAPE_URL
  value: {{ . | quote }}
{{- end }}
{{- with toString $e.scrapeInterval | trim }}
- name: MPGATE_SCRAPE_INTERVAL
  value: {{ . | quote }}
{{- end }}
{{- if eq $e.mode "entrypoint" }}
- name: MPGATE_GRACE
  value: {{ toString $e.grace | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "mpgate.usage.volumes" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") }}
- name: mpgate-ledger
  # On the node's disk, not in memory: the ledger is synced before each answer, and the
  # pod's containers may restart; it lives as long as the pod.
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
{{- end -}}

{{- define "mpgate.usage.volumeMounts" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") }}
- name: mpgate-ledger
  mountPath: {{ $e.ledgerDir }}
{{- end }}
{{- end -}}

{{- define "mpgate.usage.app.env" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") (eq $e.mode "sidecar") }}
- name: MPGATE_USAGE_SOCKET
  value: {{ include "mpgate.usage.socket" $e | quote }}
{{- end }}
{{- end -}}

{{- define "mpgate.usage.app.volumeMounts" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") (eq $e.mode "sidecar") }}
- name: mpgate-ledger
  mountPath: {{ $e.ledgerDir }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "mpgate.usage.sidecar" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") (eq $e.mode "sidecar") }}
- name: mpgate
  image: {{ include "mpgate.imageReference" (dict "context" . "image" $e.image "path" "marketplace.entitlement.image") | quote }}
  imagePullPolicy: {{ $e.image.pullPolicy }}
  # No arguments: the metering agent alone, until SIGTERM.
  command: ["/mpgate"]
  # A native sidecar (Kubernetes 1.29+): the app containers start only once its startup
  # probe passes (the buyer is entitled: the agent opens its socket after the start's
  # MeterUsage), and it stops after them, so it sends the last partial hour once the
  # workload has reported it.
  restartPolicy: Always
  env:
    {{- include "mpgate.env" . | trim | nindent 4 }}
  volumeMounts:
    {{- include "mpgate.volumeMounts" . | trim | nindent 4 }}
  startupProbe:
    exec:
      command: ["/mpgate", "usage", "show"]
    periodSeconds: 2
    timeoutSeconds: 5
    # The start's check may take the whole timeout; then 30 s more.
    failureThreshold: {{ add (div (add (include "mpgate.seconds" $e.timeout | atoi) 1) 2) 15 }}
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

{{/* pricing usage: grace (entrypoint mode: SIGTERM to SIGKILL for the workload; sidecar
mode: how long the app containers take to stop before the sidecar is told to) + flushTimeout
(the last partial hour's records) + 10 s, in seconds. */}}
{{- define "mpgate.usage.terminationGracePeriodSeconds" -}}
{{- $e := include "mpgate.config" . | fromJson -}}
{{- if and $e.enabled (eq $e.pricing "usage") -}}
{{- add (include "mpgate.seconds" $e.grace | atoi) (include "mpgate.seconds" $e.flushTimeout | atoi) 10 -}}
{{- end -}}
{{- end -}}
