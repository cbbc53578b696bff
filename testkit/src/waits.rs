//! Waiting for objects to reach a condition (watches, never polling sleeps).

use std::fmt;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Wait until `cond` holds for the object `name` (watching it), at most `timeout`.
/// Returns the object as it was when the condition held.
pub async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    cond: impl Condition<K>,
    timeout: Duration,
) -> Result<Option<K>>
where
    K: Clone + fmt::Debug + Send + DeserializeOwned + Resource + 'static,
{
    let what = format!("{} {name}", std::any::type_name::<K>());
    match tokio::time::timeout(timeout, await_condition(api, name, cond)).await {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(source)) => Err(Error::Wait { what, source }),
        Err(_) => Err(Error::Timeout { what, timeout }),
    }
}

/// Wait until the CRD `name` is Established.
pub async fn wait_crd_established(client: Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    wait_for(api, name, conditions::is_crd_established(), timeout).await?;
    Ok(())
}
