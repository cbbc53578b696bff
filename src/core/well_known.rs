//! Every fixed name the operator writes or reads: one place, so docs, chart and tests agree.

/// API group of the custom resources.
pub const API_GROUP: &str = "tenantaccess.dev";
/// API version of the custom resources.
pub const API_VERSION: &str = "v1alpha1";
/// The one server-side-apply field manager the operator uses for everything it writes.
pub const FIELD_MANAGER: &str = "tenant-access-operator";
/// Name of the operator as it appears in the managed-by label and in events.
pub const OPERATOR_NAME: &str = "tenant-access-operator";
/// The `reportingController` of the operator's events (a DNS-style name, as the Events API asks).
pub const REPORTING_CONTROLLER: &str = "tenantaccess.dev/operator";

/// Label put on every object the operator creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the TenantAccess an owned Secret or ConfigMap belongs to.
pub const LABEL_TENANT_ACCESS: &str = "tenantaccess.dev/tenant-access";

/// Annotation a user changes (to any new value) to force a re-sign now.
pub const ANNOTATION_RENEW: &str = "tenantaccess.dev/renew";
/// Annotation a user changes (to any new value) on a TinybirdWorkspace or
/// ClusterTinybirdWorkspace to rotate its admin token now (an emergency revoke).
pub const ANNOTATION_ROTATE: &str = "tenantaccess.dev/rotate";
/// Annotation on an issued Secret and on restarted pod templates: the token revision.
pub const ANNOTATION_REVISION: &str = "tenantaccess.dev/revision";
/// Label a Deployment, StatefulSet or DaemonSet must carry (value `"true"`) before the operator
/// restarts it for a TenantAccess's `rolloutRestartTargets`: without it, a team could have the
/// operator patch any workload of its namespace with the operator's rights.
pub const LABEL_RESTART_ON_TOKEN_CHANGE: &str = "tenantaccess.dev/restart-on-token-change";
/// Annotation an admin-token or Clerk-key Secret must carry to be used by a workspace: the
/// workspaces allowed to use it, comma-separated (`<name>` for a TinybirdWorkspace of the Secret's
/// namespace, `ClusterTinybirdWorkspace/<name>`, or `*`). See `crate::core::allowed_workspaces`.
pub const ANNOTATION_ALLOWED_WORKSPACES: &str = "tenantaccess.dev/allowed-workspaces";
/// Finalizer that lets the operator delete remote Clerk templates.
pub const FINALIZER: &str = "tenantaccess.dev/clerk-template";

/// Keys of an issued token Secret.
pub mod secret_keys {
    /// The signed Tinybird JWT.
    pub const TOKEN: &str = "token";
    /// The Tinybird API base URL the token is meant for.
    pub const API_URL: &str = "api-url";
    /// The Tinybird workspace id.
    pub const WORKSPACE_ID: &str = "workspace-id";
    /// The token's expiry, RFC 3339.
    pub const EXPIRES_AT: &str = "expires-at";
    /// Every key the operator writes in a token Secret.
    pub const ALL: [&str; 4] = [TOKEN, API_URL, WORKSPACE_ID, EXPIRES_AT];
}

/// Key of the rendered Clerk template in the `<name>-clerk-template` ConfigMap.
pub const CLERK_TEMPLATE_CONFIGMAP_KEY: &str = "template.json";
/// Suffix of the ConfigMap holding the rendered Clerk template.
pub const CLERK_TEMPLATE_CONFIGMAP_SUFFIX: &str = "-clerk-template";

/// Condition types.
pub mod condition {
    /// Overall readiness of a resource.
    pub const READY: &str = "Ready";
    /// A TenantAccess's token is issued and valid.
    pub const TOKEN_ISSUED: &str = "TokenIssued";
    /// A TenantAccess's Clerk template matches the desired template.
    pub const CLERK_TEMPLATE_SYNCED: &str = "ClerkTemplateSynced";
    /// Every probed pipe endpoint answered as expected.
    pub const ENDPOINTS_HEALTHY: &str = "EndpointsHealthy";
    /// Every granted pipe's SQL filters by the params the TenantAccess pins.
    pub const PIPES_ISOLATED: &str = "PipesIsolated";
    /// A workspace's last admin-token rotation: done, in progress, or what went wrong.
    pub const KEY_ROTATION: &str = "KeyRotation";
}

/// Condition reasons (CamelCase, bounded: also used as metric and event labels).
pub mod reason {
    pub const READY: &str = "Ready";
    /// `PipesIsolated`: every granted pipe filters by the pinned params.
    pub const ISOLATED: &str = "Isolated";
    /// `PipesIsolated`: a granted pipe's SQL never filters by a pinned param.
    pub const PIPE_NOT_ISOLATED: &str = "PipeNotIsolated";
    /// `PipesIsolated`: a granted pipe's SQL could not be analysed.
    pub const ISOLATION_UNKNOWN: &str = "IsolationUnknown";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A referenced Secret does not list the workspace in `tenantaccess.dev/allowed-workspaces`.
    pub const SECRET_NOT_ALLOWED: &str = "SecretNotAllowed";
    pub const KEY_MISSING: &str = "KeyMissing";
    pub const MALFORMED_TOKEN: &str = "MalformedToken";
    pub const WORKSPACE_MISMATCH: &str = "WorkspaceMismatch";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const WORKSPACE_NOT_FOUND: &str = "WorkspaceNotFound";
    pub const WORKSPACE_NOT_READY: &str = "WorkspaceNotReady";
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// The `<name>-clerk-template` ConfigMap exists and was not created by this TenantAccess.
    pub const CONFIGMAP_CONFLICT: &str = "ConfigMapConflict";
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    pub const TOKEN_TOO_LARGE: &str = "TokenTooLarge";
    pub const ISSUED: &str = "Issued";
    pub const RENEWED: &str = "Renewed";
    pub const RESIGNED: &str = "Resigned";
    pub const SYNCED: &str = "Synced";
    pub const NOT_REQUESTED: &str = "NotRequested";
    /// `Ready=True`: the token Secret is current, the Clerk template is not synced.
    pub const DEGRADED: &str = "Degraded";
}

/// Reasons of the `ClerkTemplateSynced` condition (with `crate::adapters::clerk::reason` for API failures).
pub mod clerk_reason {
    /// The template in Clerk matches the desired one.
    pub const SYNCED: &str = "Synced";
    /// The workspace has no Clerk connection: the template is only rendered to the ConfigMap.
    pub const RENDERED_ONLY: &str = "RenderedOnly";
    /// A template of that name exists in Clerk and is not managed by this TenantAccess.
    pub const CONFLICT: &str = "ClerkTemplateConflict";
}
