//! Pods and Services shaped as an API server sends them: a Deployment's
//! Pod with the controller manager's and the kubelet's managedFields, and
//! a Service made by `kubectl apply` (its managedFields and the
//! last-applied-configuration annotation). Shared by the examples.
//!
//! Pure.

#![allow(dead_code)]

use serde_json::json;

pub fn pod(i: usize) -> String {
    let name = format!("web-7d4b9c8f6d-{i:05}");
    json!({
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": name, "namespace": "demo", "generateName": "web-7d4b9c8f6d-",
        "uid": format!("6c1f0d2e-0000-4000-8000-{i:012}"), "resourceVersion": (100000 + i).to_string(),
        "creationTimestamp": "2026-12-01T10:00:00Z",
        "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6d",
            "uid": "0b8f1e9a-1111-4000-8000-000000000000", "controller": true, "blockOwnerDeletion": true}],
        "managedFields": [
          {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
           "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
             "f:ownerReferences": {".": {}, "k:{\"uid\":\"0b8f1e9a-1111-4000-8000-000000000000\"}": {}}},
             "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {},
               "f:name": {}, "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}},
               "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
               "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {},
               "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}}},
          {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-12-01T10:00:05Z",
           "fieldsType": "FieldsV1", "subresource": "status",
           "fieldsV1": {"f:status": {"f:conditions": {
              "k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
              "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
              "k:{\"type\":\"PodReadyToStartContainers\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
              "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}},
              "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {},
              "f:podIPs": {".": {}, "k:{\"ip\":\"10.244.1.5\"}": {".": {}, "f:ip": {}}}, "f:startTime": {}}}}
        ]
      },
      "spec": {
        "nodeName": "node-1", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "terminationGracePeriodSeconds": 30, "schedulerName": "default-scheduler",
        "containers": [{"name": "web", "image": "registry.example/web:1.2.3", "imagePullPolicy": "IfNotPresent",
          "ports": [{"containerPort": 8080, "protocol": "TCP"}],
          "volumeMounts": [{"name": "kube-api-access-abcde", "readOnly": true,
             "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
        "volumes": [{"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
          {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
          {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
          {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}]
      },
      "status": {
        "phase": "Running", "hostIP": "192.0.2.1", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 1),
        "podIPs": [{"ip": format!("10.244.{}.{}", i / 250, i % 250 + 1)}], "startTime": "2026-12-01T10:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T10:00:05Z"},
                       {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-01T10:00:05Z"}],
        "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "registry.example/web:1.2.3",
          "imageID": "registry.example/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
          "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
          "started": true, "state": {"running": {"startedAt": "2026-12-01T10:00:04Z"}}}]
      }
    })
    .to_string()
}

pub fn service(i: usize) -> String {
    let applied = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"annotations": {}, "name": format!("svc-{i}"), "namespace": "demo"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": {"app": format!("app-{i}")}}});
    json!({
      "apiVersion": "v1", "kind": "Service",
      "metadata": {
        "name": format!("svc-{i}"), "namespace": "demo", "uid": format!("5a0e0d2e-0000-4000-8000-{i:012}"),
        "resourceVersion": (200000 + i).to_string(), "creationTimestamp": "2026-12-01T10:00:00Z",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n")},
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
          "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
            "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {},
              "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}, "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}}]
      },
      "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1), "clusterIPs": [format!("10.96.{}.{}", i / 250, i % 250 + 1)],
        "type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster", "selector": {"app": format!("app-{i}")},
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
      "status": {"loadBalancer": {}}
    })
    .to_string()
}
