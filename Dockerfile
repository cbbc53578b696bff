# syntax=docker/dockerfile:1.7
#
# The operator image: `tenant-access` on distroless/cc (glibc), running as a non-root user.
#
#   docker build -t tenant-access-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/tenant-access-operator:0.1.0 --push .
#
# Why glibc and distroless/cc rather than a static musl binary on scratch:
# - musl's allocator serialises a multi-threaded tokio program (the operator runs watches,
#   reconciles, probes and HTTP clients on every core); making a musl build fast needs a
#   different global allocator, a code change for a packaging concern.
# - aws-lc-rs (TLS and JWT signing) compiles C: glibc needs nothing beyond the Debian build
#   image, musl needs a musl cross toolchain.
# - rustls verifies Tinybird's and Clerk's certificates against the system CA bundle, which
#   distroless ships (scratch would need it copied in), and distroless/cc has exactly the
#   libraries such a binary links (libc, libm, libgcc_s) and nothing else: no shell, no
#   package manager. The build image (bookworm) and the runtime (debian12) share glibc 2.36.
# Pin the base images by digest in your release pipeline (`FROM image@sha256:...`).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace (every member's manifest and sources are needed to resolve it);
# .dockerignore keeps target/, .git/ and everything not needed to build out.
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the
# cache mount in the same step. --locked: exactly the versions of Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tenant-access-operator --bin tenant-access \
    && install -D -m 0755 target/release/tenant-access /out/tenant-access \
    && /out/tenant-access --version

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tenant-access-operator" \
      org.opencontainers.image.description="Kubernetes operator issuing, renewing and re-signing Tinybird JWTs and Clerk JWT templates" \
      org.opencontainers.image.source="https://github.com/tenant-access-operator/tenant-access-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/tenant-access /usr/local/bin/tenant-access
# Numeric, so that the kubelet can check runAsNonRoot (the chart runs as the same 65532).
USER 65532:65532
# The admin server (--admin-address): /metrics, /livez, /readyz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tenant-access"]
CMD ["run"]
