//! How the commands that talk to the cluster (`status`, `renew`, `inspect secret`) find it and
//! their objects, as kubectl does: `--kubeconfig` and `--context`, the context's namespace unless
//! `-n` names one, `-A` for every namespace and `-l` for a label selector.

use kube::api::ListParams;
use kube::{Api, Client};

use super::{CliError, kube_client_with};

/// Where the cluster is and which namespace a command works in.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct Connection {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, or the in-cluster config).
    #[arg(long, env = "TENANT_ACCESS_KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl Connection {
    /// A client, and the namespace to use: `-n`, else the context's, else `default`.
    pub async fn connect(&self) -> Result<(Client, String), CliError> {
        let client = kube_client_with(self.kubeconfig.as_deref(), self.context.as_deref()).await?;
        let namespace = self.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client, namespace))
    }
}

/// Which TenantAccesses a command is about: one by name, or a selection.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct Selection {
    #[command(flatten)]
    pub connection: Connection,
    /// Every namespace (with `-l`: every TenantAccess the selector matches in any namespace).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only TenantAccesses whose labels match this selector (`key=value,other!=x,present`), as
    /// kubectl's `-l`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// The TenantAccesses selected, and how to say where they were looked for.
pub(super) struct Selected<K> {
    /// The objects, by namespace then name.
    pub objects: Vec<K>,
    /// Where they were looked for, for "none found" messages: `namespace "x"`, `any namespace`.
    pub scope: String,
}

impl Selection {
    /// Whether this selects more than a named object (`-A` or `-l`).
    pub fn is_selection(&self) -> bool {
        self.all_namespaces || self.selector.is_some()
    }

    /// The client, and the objects `name` (when given) or the selection names.
    ///
    /// # Errors
    /// A name with `-A` or `-l` (ambiguous), and API errors, named.
    pub async fn fetch<K>(&self, name: Option<&str>) -> Result<(Client, Selected<K>), CliError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let (client, namespace) = self.connection.connect().await?;
        let kind = K::kind(&());
        if let Some(name) = name {
            if self.all_namespaces {
                return Err(CliError::Input(format!(
                    "a {kind} cannot be named across all namespaces: drop -A, or drop the name to list"
                )));
            }
            if self.selector.is_some() {
                return Err(CliError::Input(format!("name a {kind} or select with -l, not both")));
            }
            let api: Api<K> = Api::namespaced(client.clone(), &namespace);
            let object =
                api.get(name).await.map_err(|e| api_error("reading", &kind, &namespace, name, &e))?;
            let scope = format!("namespace {namespace:?}");
            return Ok((client, Selected { objects: vec![object], scope }));
        }
        let (api, scope): (Api<K>, String) = if self.all_namespaces {
            (Api::all(client.clone()), "any namespace".to_owned())
        } else {
            (Api::namespaced(client.clone(), &namespace), format!("namespace {namespace:?}"))
        };
        let mut params = ListParams::default();
        if let Some(selector) = &self.selector {
            params = params.labels(selector);
        }
        let list = api.list(&params).await.map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 400 => CliError::Input(format!(
                "-l {:?}: {}",
                self.selector.as_deref().unwrap_or(""),
                status.message
            )),
            other => CliError::Input(format!(
                "listing {kind} in {scope}: {}",
                crate::adapters::kube_error::describe(other)
            )),
        })?;
        let mut objects = list.items;
        objects.sort_by(|a, b| {
            (a.meta().namespace.as_deref(), a.meta().name.as_deref())
                .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
        });
        Ok((client, Selected { objects, scope }))
    }
}

/// An API error as one line for a person: not found, forbidden, or the server's message.
pub(super) fn api_error(
    what: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    error: &kube::Error,
) -> CliError {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            CliError::Input(format!("{kind} {namespace}/{name} not found"))
        }
        other => CliError::Input(format!(
            "{what} {kind} {namespace}/{name}: {}",
            crate::adapters::kube_error::describe(other)
        )),
    }
}
