#include <rlhf/ppo/tensorboard.hpp>

#include <filesystem>

int main() {
    // One scalar into a fresh folder: the events file exists and holds more than the version record.
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / "rlhf_use_tensorboard";
    std::filesystem::remove_all(dir);
    const rlhf::ppo::tensorboard_sink sink(dir);
    const auto version_only = std::filesystem::file_size(sink.path());
    sink.add_scalar("reward", 1.5, 1);
    return std::filesystem::file_size(sink.path()) > version_only ? 0 : 1;
}
