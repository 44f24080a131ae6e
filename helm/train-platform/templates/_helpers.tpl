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
{{- range $key := list "data" "models" "results" "state" }}
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
