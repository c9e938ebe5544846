# One multi-stage image per function: `make images` builds assetgen-submit, -generate and -relay.
#   docker build --build-arg FUNCTION=submit -t assetgen-submit .
# The build stage compiles one binary in release; the runtime stage is distroless (glibc, CA
# certificates, no shell), running as non-root. Cloud Run sets PORT.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG FUNCTION
WORKDIR /src
COPY . .
RUN test -n "${FUNCTION}" \
 && cargo build --release --locked -p "assetgen-${FUNCTION}" --bin "assetgen-${FUNCTION}" \
 && cp "target/release/assetgen-${FUNCTION}" /function

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /function /function
ENV PORT=8080
USER nonroot
ENTRYPOINT ["/function"]
