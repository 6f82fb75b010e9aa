//! Compiles KubeVirt's hook API (written in proto/ from KubeVirt's documented messages).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/hooks_info.proto",
            "proto/hooks_v1alpha2.proto",
            "proto/hooks_v1alpha3.proto",
        ],
        &["proto/"],
    )?;
    Ok(())
}
