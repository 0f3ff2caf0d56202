// The bundled example server in a child process, for the tests that run it as a user does:
// spawned on a free port, talked to over loopback, stopped by a signal.
#ifndef PLINTH_TESTS_EXAMPLE_PROCESS_HPP
#define PLINTH_TESTS_EXAMPLE_PROCESS_HPP

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace plinth_test {

/// plinth-example in a child process; the port is read from its first line of output.
class example_process {
public:
    /// `flags` are added to "--port 0 --threads 2".
    explicit example_process(std::vector<std::string> flags = {})
    {
        int out[2];
        REQUIRE(::pipe(out) == 0);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, out[0]);
        std::string binary = PLINTH_EXAMPLE_SERVER;
        std::vector<std::string> args{binary, "--port", "0", "--threads", "2"};
        args.insert(args.end(), flags.begin(), flags.end());
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        REQUIRE(::posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ) == 0);
        posix_spawn_file_actions_destroy(&actions);
        ::close(out[1]);
        output_ = ::fdopen(out[0], "r");

        char line[256] = {};
        REQUIRE(std::fgets(line, sizeof line, output_) != nullptr);
        std::string text = line; // "plinth-example listening on http://127.0.0.1:PORT with 2 thread(s)"
        auto colon = text.rfind(':');
        REQUIRE(colon != std::string::npos);
        port_ = static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1)));
    }

    example_process(const example_process&) = delete;
    example_process& operator=(const example_process&) = delete;

    ~example_process()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (output_)
            std::fclose(output_);
    }

    std::uint16_t port() const { return port_; }

    /// Sends `signal` and returns the exit status.
    int stop(int signal)
    {
        send(signal);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    /// Sends `signal` and waits up to `limit` for the process to exit: its exit status (-1 when
    /// it did not exit normally), or nothing when it is still running (the destructor kills it).
    std::optional<int> stop_within(int signal, std::chrono::steady_clock::duration limit)
    {
        send(signal);
        const auto deadline = std::chrono::steady_clock::now() + limit;
        for (;;) {
            int status = 0;
            const pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            if (r < 0 || std::chrono::steady_clock::now() >= deadline)
                return std::nullopt;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }

    void send(int signal) { ::kill(pid_, signal); }

private:
    pid_t pid_ = -1;
    FILE* output_ = nullptr;
    std::uint16_t port_ = 0;
};

} // namespace plinth_test

#endif
