{{/*
Names and labels shared by every template. Names are cut at 63 characters because
Kubernetes names and label values are DNS-1123 labels.
*/}}

{{- define "train-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
"<release>-<chart>", or just the release name when it already contains the chart name,
so `helm install train-platform ...` does not give "train-platform-train-platform".
*/}}
{{- define "train-platform.fullname" -}}
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

{{/* Labels of every object of the release. */}}
{{- define "train-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "train-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: train-platform
{{- end }}

{{/* Labels of the inference objects (Deployment, its pods, Service, HPA, PDB). */}}
{{- define "train-platform.inferenceLabels" -}}
{{ include "train-platform.labels" . }}
app.kubernetes.io/component: inference
{{- end }}

{{/* Labels that select the serving pods; they must never change across upgrades. */}}
{{- define "train-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "train-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: inference
{{- end }}

{{- define "train-platform.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "train-platform.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "train-platform.configMapName" -}}
{{- printf "%s-config" (include "train-platform.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "train-platform.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "train-platform.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "train-platform.podLauncherName" -}}
{{- printf "%s-pod-launcher" (include "train-platform.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "train-platform.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* BENTOML_HOME: explicit, or the BentoML store on the shared models volume. */}}
{{- define "train-platform.bentomlHome" -}}
{{- if .Values.config.bentomlHome }}
{{- .Values.config.bentomlHome }}
{{- else }}
{{- printf "%s/bentoml" (trimSuffix "/" .Values.persistence.models.mountPath) }}
{{- end }}
{{- end }}

{{/*
Checks that need more than one value, which values.schema.json cannot express. Each
failure names the values to change.
*/}}
{{- define "train-platform.validate" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is larger than autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if not (dig "requests" "cpu" "" .Values.inference.resources) }}
{{- fail "autoscaling.enabled needs inference.resources.requests.cpu: the HPA's CPU target is a percentage of it" }}
{{- end }}
{{- end }}
{{- if and (not .Values.config.bentomlHome) (not .Values.persistence.models.mountInInference) }}
{{- fail "persistence.models.mountInInference is false but config.bentomlHome is empty: the serving pods would not see the model store; mount the models volume or set config.bentomlHome" }}
{{- end }}
{{- $paths := dict }}
{{- $claims := dict }}
{{- range $key := include "train-platform.volumeKeys" $ | splitList " " }}
{{- $volume := index $.Values.persistence $key }}
{{- $path := trimSuffix "/" $volume.mountPath }}
{{- if hasKey $paths $path }}
{{- fail (printf "persistence.%s.mountPath %q is also the mountPath of persistence.%s" $key $volume.mountPath (get $paths $path)) }}
{{- end }}
{{- if hasKey $claims $volume.claimName }}
{{- fail (printf "persistence.%s.claimName %q is also the claimName of persistence.%s" $key $volume.claimName (get $claims $volume.claimName)) }}
{{- end }}
{{- $_ := set $paths $path $key }}
{{- $_ := set $claims $volume.claimName $key }}
{{- end }}
{{- end }}

{{/*
The keys of persistence.*, one claim each: the claims pipelines mount (every path the shipped
pipelines read or write lies on one of them) and the Airflow components' state.
*/}}
{{- define "train-platform.volumeKeys" -}}
data models results deployments reports demo state
{{- end }}

{{/* Labels of one alert: its severity and alerts.alertLabels. */}}
{{- define "train-platform.alertLabels" -}}
severity: {{ .severity }}
{{- with .root.Values.alerts.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The alert rule groups (templates/alerts.yaml). Prometheus' own {{ $labels.x }} and
{{ $value }} are written as Go-template string literals so Helm leaves them alone.
*/}}
{{- define "train-platform.alertGroups" -}}
{{- $a := .Values.alerts -}}
- name: train-platform.inference
  rules:
    - alert: TrainPlatformEndpointErrorRate
      expr: |
        sum by (model) (rate(tp_predict_requests_total{outcome=~"error|overloaded"}[5m]))
          / sum by (model) (rate(tp_predict_requests_total[5m])) > {{ $a.endpointErrorRate.threshold }}
      for: {{ $a.endpointErrorRate.for }}
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "critical" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"Inference endpoint of {{ $labels.model }} fails {{ $value | humanizePercentage }} of requests"` }}
        description: Requests that ended in a server error or were refused as overloaded, over 5 minutes, above {{ $a.endpointErrorRate.threshold }} of all requests.
    - alert: TrainPlatformEndpointLatencyP99
      expr: |
        histogram_quantile(0.99, sum by (model, le) (rate(tp_predict_latency_seconds_bucket[5m]))) > {{ $a.endpointLatencyP99.seconds }}
      for: {{ $a.endpointLatencyP99.for }}
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "warning" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"p99 latency of {{ $labels.model }} is {{ $value | humanizeDuration }}"` }}
        description: The 99th percentile of request-to-answer time over 5 minutes is above {{ $a.endpointLatencyP99.seconds }} s.
    - alert: TrainPlatformInputDrift
      expr: |
        max by (model, version, channel) (tp_input_drift_psi) > {{ $a.inputDrift.psi }}
      for: {{ $a.inputDrift.for }}
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "warning" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"Served inputs of {{ $labels.model }} v{{ $labels.version }} drifted on channel {{ $labels.channel }} (PSI {{ $value }})"` }}
        description: The population stability index of served inputs against the training data is above {{ $a.inputDrift.psi }}; new recordings may need labels and a retrain.
    - alert: TrainPlatformServedAccuracyLow
      expr: |
        (
          sum by (model, version) (rate(tp_confirmed_predictions_total{correct="true"}[1h]))
            / sum by (model, version) (rate(tp_confirmed_predictions_total[1h]))
        ) < {{ $a.servedAccuracy.floor }}
        and sum by (model, version) (increase(tp_confirmed_predictions_total[1h])) >= {{ $a.servedAccuracy.minLabels }}
      for: {{ $a.servedAccuracy.for }}
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "warning" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"{{ $labels.model }} v{{ $labels.version }} is right on {{ $value | humanizePercentage }} of confirmed labels"` }}
        description: Of the predictions a person confirmed or corrected in the last hour (at least {{ $a.servedAccuracy.minLabels }}), fewer than {{ $a.servedAccuracy.floor }} were right.
- name: train-platform.pipelines
  rules:
    - alert: TrainPlatformPipelineRunFailed
      expr: |
        max by (pipeline) (tp_pipeline_run_failed) == 1
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "critical" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"The last run of pipeline {{ $labels.pipeline }} failed"` }}
        description: Resolves when a later run succeeds. The webhook of the pipeline's notify connection received the failed task and its reason.
    - alert: TrainPlatformTaskFailed
      expr: |
        max by (pipeline, task) (tp_task_failed) == 1
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "warning" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"Task {{ $labels.task }} of pipeline {{ $labels.pipeline }} failed its last try"` }}
        description: Resolves when the task next succeeds or is skipped.
    - alert: TrainPlatformCandidateAccuracyDrop
      expr: |
        max by (pipeline, task) (
          tp_evaluation_baseline_metric{metric="accuracy"}
            - on (pipeline, task, metric) tp_evaluation_metric{metric="accuracy"}
        ) > {{ $a.candidateAccuracyDrop.max }}
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "warning" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"The candidate of {{ $labels.pipeline }} is {{ $value | humanizePercentage }} less accurate than production"` }}
        description: Accuracy of the latest candidate against production's, measured on the same held-out data, dropped by more than {{ $a.candidateAccuracyDrop.max }}.
    - alert: TrainPlatformForgetting
      expr: |
        max by (pipeline, task) (tp_evaluation_forgetting) > {{ $a.forgetting.max }}
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "warning" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"The candidate of {{ $labels.pipeline }} forgot {{ $value | humanizePercentage }} of accuracy on old classes"` }}
        description: Accuracy on the classes production knew fell by more than {{ $a.forgetting.max }} in the latest evaluation.
    - alert: TrainPlatformGateFailed
      expr: |
        min by (pipeline, model) (tp_gate_passed) == 0
      labels:
        {{- include "train-platform.alertLabels" (dict "severity" "info" "root" .) | nindent 8 }}
      annotations:
        summary: {{ `"The latest candidate of {{ $labels.model }} ({{ $labels.pipeline }}) failed its evaluation gate"` }}
        description: Nothing was deployed; the gate's reasons are on the version (tp model history) and in the gate_failed notification.
{{- end }}
