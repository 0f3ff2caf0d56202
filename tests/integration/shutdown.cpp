// placeholder: being written
#include "test_server.hpp"
